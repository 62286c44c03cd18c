"""The benchmark run: one redis-server, interleaved rounds of every system, then the engine's own sections."""

from __future__ import annotations

import functools
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._server import BenchRedis
from bench.groups import run_groups
from bench.harness import ProcessSpec, RunConfig
from bench.ingress import run_ingress
from bench.limiter import run_limiter
from bench.memory import run_memory
from bench.pairs import run_pairs
from bench.systems import SYSTEMS, System, run_system

SECTIONS = ("limiter", "ingress", "memory", "groups", "pairs")
# Our engine is measured at three concurrencies, and once more at 10 with production's INFO logging.
OURS_PROCESS = [
    ProcessSpec("c1", 1),
    ProcessSpec("c10", 10),
    ProcessSpec("c50", 50),
    ProcessSpec("c10_info_logs", 10, {"log_level": "INFO"}),
]
PEER_PROCESS = [ProcessSpec("c10", 10)]
# A full run's rounds. A phase of 10,000 jobs lasts under half a second on a fast host, where rounds of the same
# code lie up to 1.5x apart, more than a 10% target: the median of five is steadier than of three (the default
# until round 18).
FULL_ROUNDS = 5


@dataclass(frozen=True)
class Plan:
    """Sizes of every measurement; `--quick` shrinks them to fit about two minutes."""

    quick: bool
    rounds: int
    n: int
    latency_n: int
    rate: float
    limiter_backlog: int
    ingress_rate: float
    ingress_s: float
    memory_jobs: int
    group_fetches: int
    enqueue_pairs: int
    only: tuple[str, ...]

    @classmethod
    def build(cls, *, quick: bool, rounds: int | None, only: tuple[str, ...]) -> Plan:
        if quick:
            return cls(True, rounds or 1, 2_000, 400, 200.0, 100, 300.0, 5.0, 20_000, 500, 1, only)
        return cls(False, rounds or FULL_ROUNDS, 10_000, 1_000, 200.0, 300, 300.0, 30.0, 100_000, 2_000, 2, only)

    def wants(self, key: str) -> bool:
        if not self.only:
            return True
        peers = key not in ("ours", *SECTIONS)
        return key in self.only or (key == "ours" and "engine" in self.only) or (peers and "peers" in self.only)


def known_names() -> list[str]:
    """Every name --only accepts."""
    return [s.key for s in SYSTEMS] + list(SECTIONS) + ["engine", "peers"]


class Run:
    """Holds the server, the scratch directory and the growing result while the rounds go on."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.workdir = Path(tempfile.mkdtemp(prefix="slack-backend-bench-"))
        self.server = BenchRedis(self.workdir / "redis")
        self.t0 = time.monotonic()
        self.out: dict[str, Any] = {
            "meta": {
                "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "plan": asdict(self.plan),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg_start": list(os.getloadavg()),
                "workdir": str(self.workdir),
            },
            "systems": {s.name: {"key": s.key, "peer": s.is_peer, "rounds": []} for s in SYSTEMS if plan.wants(s.key)},
            "groups": {"rounds": []},
            "ingress": {"rounds": []},
            "pairs": {"rounds": []},
        }

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f} s] {text}", file=sys.stderr, flush=True)

    async def execute(self) -> dict[str, Any]:
        self.server.start()
        self.out["meta"]["redis"] = self.server.version()
        try:
            for r in range(self.plan.rounds):
                systems = [s for s in SYSTEMS if self.plan.wants(s.key)]
                # Alternate the order, so whatever drifts during a round (load, thermal, caches) is shared out.
                for system in systems if r % 2 == 0 else systems[::-1]:
                    await self._system(system, r)
                if self.plan.wants("pairs"):
                    await self._section("pairs", r, functools.partial(self._pairs, r))
                if self.plan.wants("groups"):
                    await self._section(
                        "groups", r, lambda: run_groups(self.server.url, fetches=self.plan.group_fetches)
                    )
                if self.plan.wants("ingress"):
                    await self._section(
                        "ingress",
                        r,
                        lambda: run_ingress(
                            self.server.url, self.workdir, rate=self.plan.ingress_rate, duration_s=self.plan.ingress_s
                        ),
                    )
            # Long steady-state checks of bounds, not ratios: once per run.
            if self.plan.wants("limiter"):
                await self._section(
                    "limiter",
                    None,
                    lambda: run_limiter(self.server.url, self.workdir, backlog=self.plan.limiter_backlog),
                )
            if self.plan.wants("memory"):
                await self._section(
                    "memory", None, lambda: run_memory(self.server.url, self.workdir, total=self.plan.memory_jobs)
                )
        finally:
            self.server.stop()
        self.out["meta"]["duration_s"] = round(time.monotonic() - self.t0, 1)
        self.out["meta"]["loadavg_end"] = list(os.getloadavg())
        return self.out

    async def _system(self, system: System, round_no: int) -> None:
        self.server.flush()
        cfg = RunConfig(
            tag=f"r{round_no}",
            n=self.plan.n,
            latency_n=self.plan.latency_n,
            rate=self.plan.rate,
            process=OURS_PROCESS if system.key == "ours" else PEER_PROCESS,
            log_dir=str(self.workdir),
        )
        started = time.monotonic()
        load_1m = os.getloadavg()[0]
        result = await run_system(
            system,
            {"url": self.server.url, **cfg.to_json()},
            timeout_s=180 + self.plan.n / 25,
            log_path=self.workdir / f"driver-{system.key}.log",
        )
        result["round"] = round_no
        result["loadavg_1m"] = load_1m
        self.out["systems"][system.name]["rounds"].append(result)
        took = time.monotonic() - started
        self.say(f"round {round_no + 1}/{self.plan.rounds} {system.name}: {_brief(result)} ({took:.0f} s)")

    async def _pairs(self, round_no: int) -> dict[str, Any]:
        return await run_pairs(
            self.server.url,
            self.workdir,
            self.server.flush,
            n=self.plan.n,
            pairs=self.plan.enqueue_pairs,
            round_no=round_no,
        )

    async def _section(self, name: str, round_no: int | None, job: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.server.flush()
        started = time.monotonic()
        load_1m = os.getloadavg()[0]
        try:
            result = await job()
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["loadavg_1m"] = load_1m
        if round_no is None:
            self.out[name] = result
        else:
            self.out[name]["rounds"].append({**result, "round": round_no})
        outcome = f"error: {result['error']}" if "error" in result else "done"
        self.say(f"{name}: {outcome} ({time.monotonic() - started:.0f} s)")


def _brief(result: dict[str, Any]) -> str:
    if "unavailable" in result:
        return f"unavailable: {result['unavailable']}"
    proc = (result.get("process") or {}).get("c10") or {}
    seq = result.get("enqueue_seq") or {}
    per_s = proc.get("per_s")
    return f"process c10 {per_s:,.0f}/s, enqueue {seq.get('per_s', 0):,.0f}/s" if per_s else "no process figure"
