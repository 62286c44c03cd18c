"""Start and stop engine worker processes (tests/support/worker_proc.py) and read what they recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from slack_backend.queue import Queue
from slack_backend.queue.connection import RedisClient

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(cfg: dict[str, Any], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start one engine test worker process with the given config; its logs go to `log_path` (or are dropped)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return spawn([sys.executable, "-m", "tests.support.worker_proc", json.dumps(cfg)], env, log_path)


# Every process spawn() started and nobody reaped yet: the root conftest's autouse fixture kills what a test left
# running (a failed wait before its SIGTERM, say), so no worker outlives its test and runs on against the session Redis.
_STARTED: list[subprocess.Popen[bytes]] = []


def spawn(args: list[str], env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a process from the project root; stdout and stderr go to `log_path` (or are dropped)."""
    if log_path is None:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    else:
        with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    _STARTED.append(proc)
    return proc


def kill_leftovers() -> list[int]:
    """SIGKILL (after SIGCONT, for stopped ones) every spawned process still running, reap all; return their pids."""
    killed = []
    for proc in _STARTED:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            killed.append(proc.pid)
        proc.wait(timeout=10)
    _STARTED.clear()
    return killed


async def recorded_runs(client: RedisClient, queue: Queue) -> list[dict[str, Any]]:
    raw = await client.lrange(f"{queue.keys.tag}:test:runs", 0, -1)
    return [json.loads(r) for r in raw]


async def live_workers(queue: Queue) -> int:
    return len(await queue.workers())
