"""The fake model in a process of its own (tests/fakes/anthropic_process.py), started and read by a test."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.procs import spawn


class ModelProcess:
    """Starts the fake model's process (through `spawn`, so no test leaves it running) and reads what it saw."""

    def __init__(self, api_key: str, workdir: Path) -> None:
        self._api_key = api_key
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    async def start(
        self, env: dict[str, str], script: list[tuple[str, float]] | None = None, timeout_s: float = 30.0
    ) -> None:
        """Start it; `script` answers its requests in order, as [kind, argument] (tests/fakes/anthropic_process.py)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "tests.fakes.anthropic_process", self._api_key, str(self.dir)]
        if script is not None:
            (self.dir / "script.json").write_text(json.dumps(script))
            args.append(str(self.dir / "script.json"))
        proc = self.proc = spawn(args, env, self.dir / "log")
        deadline = time.monotonic() + timeout_s
        while not (self.dir / "url").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake model's process did not start: {(self.dir / 'log').read_text()}")
            await asyncio.sleep(0.02)
        self.base_url = (self.dir / "url").read_text()

    def stop(self) -> list[float]:
        """SIGTERM it and return the arrival times (monotonic s) of the message requests it received."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        return [float(t) for t in json.loads((self.dir / "received.json").read_text())]
