"""Fault-test helpers: a fleet of engine worker processes (spawn, SIGKILL, SIGTERM, stop all), the web app, figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx

from slack_backend.config import Settings
from slack_backend.queue import JobState, Queue
from tests.support.engine import wait_until
from tests.support.procs import ROOT, spawn, spawn_worker
from tests.support.redis_server import RedisServer


class WorkerFleet:
    """Worker processes sharing one base config; `close()` (the fixture calls it) stops every one still alive."""

    def __init__(self, base: dict[str, Any], log_dir: Path) -> None:
        self.base = dict(base)
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, **overrides: Any) -> subprocess.Popen[bytes]:
        """Start one worker with the base config and `overrides`; its log goes to its own file."""
        log_path = self.log_dir / f"worker-{len(self.procs):03d}.log"
        proc = spawn_worker({**self.base, **overrides}, log_path)
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def spawn_ai_worker(self, cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start an ai-responses worker process (tests/support/ai_worker_proc.py) with the given config."""
        log_path = self.log_dir / f"ai-worker-{len(self.procs):03d}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = spawn([sys.executable, "-m", "tests.support.ai_worker_proc", json.dumps(cfg)], env, log_path)
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def log_text(self, proc: subprocess.Popen[bytes]) -> str:
        path = self.logs[proc.pid]
        return path.read_text(errors="replace") if path.exists() else ""

    async def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: a crash, with no chance to release anything."""
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)

    async def wait_ready(self, queue: Queue, procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
        """Wait until each process has reported in (its heartbeat names its pid): its signal handlers are set."""
        pids = {p.pid for p in procs}

        async def reported() -> bool:
            beats = await queue.workers()
            return pids <= {int(b.get("pid", -1)) for b in beats.values()}

        await wait_until(reported, timeout_s=timeout_s, every_s=0.05)

    async def terminate(self, procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30) -> list[int]:
        """SIGTERM every process at once and return their exit codes (a hung one fails the test, then is killed)."""
        for p in procs:
            p.send_signal(signal.SIGTERM)
        return [await asyncio.to_thread(p.wait, timeout_s) for p in procs]

    def close(self) -> None:
        """Stop whatever is still running: continue stopped ones, SIGKILL them, reap them."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
        deadline = time.monotonic() + 10
        for p in self.procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))


def now_ms() -> int:
    """Wall-clock epoch milliseconds (what the engine's scripts read from Redis TIME on this machine)."""
    return int(time.time() * 1000)


def describe_counts(counts: Mapping[JobState, int]) -> str:
    """Counts by state as one short line: `waiting 285, delayed 0, active 15, completed 0, failed 0`."""
    return ", ".join(f"{state.value} {n}" for state, n in counts.items())


def served_app(settings: Settings, *, quiet: bool = False) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The fault tests' name for the one in-process app helper, `tests.support.app.served`."""
    # Imported here: the root conftest imports this module before pytest registers tests.support.app as a plugin.
    from tests.support.app import served

    return served(settings, quiet=quiet)


FleetFactory = Callable[..., WorkerFleet]
"""fleet(url=..., prefix=..., **cfg) -> a WorkerFleet (the `fleet` fixture of tests/faults)."""

ServerFactory = Callable[[], RedisServer]
"""aof_redis() -> a started redis-server with AOF on (the `aof_redis` fixture of tests/faults)."""
