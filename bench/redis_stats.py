"""Redis-side costs from INFO: commands (commandstats) and server CPU, as deltas per job between two snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

# Our own measuring calls, left out of the per-job figures.
_IGNORED = {"info", "flushall", "config|resetstat", "client|setname", "hello", "ping", "select", "client|setinfo"}
_SCRIPT_CALLS = {"evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro"}


@dataclass(frozen=True)
class Snapshot:
    """Per-command call counts and the server's CPU seconds (user + sys) at one moment."""

    calls: dict[str, int]
    cpu_s: float
    used_memory: int


def snapshot(client: redis.Redis) -> Snapshot:
    """Read INFO commandstats, cpu and memory in one round trip."""
    info: dict[str, Any] = client.info("everything")
    calls: dict[str, int] = {}
    for key, value in info.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            calls[key[len("cmdstat_") :]] = int(value["calls"])
    cpu_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return Snapshot(calls, cpu_s, int(info["used_memory"]))


def per_job(before: Snapshot, after: Snapshot, jobs: int) -> dict[str, Any]:
    """Commands (every call Redis executed, including those inside Lua), script calls and Redis CPU, per job.

    commandstats counts commands run by scripts as well as those clients send, so `cmds_per_job` is Redis's
    total work; `scripts_per_job` (EVALSHA/EVAL/FCALL) approximates a Lua engine's round trips.
    """
    deltas = {
        name: after.calls.get(name, 0) - before.calls.get(name, 0)
        for name in after.calls
        if name not in _IGNORED and after.calls.get(name, 0) > before.calls.get(name, 0)
    }
    total = sum(deltas.values())
    scripts = sum(v for k, v in deltas.items() if k in _SCRIPT_CALLS)
    top = sorted(deltas.items(), key=lambda kv: -kv[1])[:6]
    jobs = max(jobs, 1)
    return {
        "cmds_per_job": total / jobs,
        "scripts_per_job": scripts / jobs,
        "redis_cpu_ms_per_job": (after.cpu_s - before.cpu_s) * 1000 / jobs,
        "top_cmds_per_job": {k: round(v / jobs, 3) for k, v in top},
    }
