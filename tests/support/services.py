"""Start the shipped commands (`slack-backend run | serve | worker`) as real processes; stop every one at the end.

Each process started here, and every process it starts in turn (the children of `worker --processes N` live in
sessions of their own), carries a marker variable, so cleanup finds them all in /proc even after their parent died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.procs import ROOT

OWNER_VAR = "SB_TEST_OWNER"


@dataclass
class Service:
    """One started command: its process, its log file and (for the web app) its base URL."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    base_url: str | None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def exit_code(self, timeout_s: float) -> int:
        """Wait for the process to exit and return its code (a timeout fails the test; cleanup kills it)."""
        return await asyncio.to_thread(self.proc.wait, timeout_s)

    async def wait_log(self, text: str, *, timeout_s: float = 30, count: int = 1) -> None:
        """Wait until `text` appears `count` times in the log (the process got that far)."""
        deadline = time.monotonic() + timeout_s
        while self.log_text().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear {count}x in the log:\n{self.log_text()[-3000:]}")
            if self.proc.poll() is not None and self.log_text().count(text) < count:
                raise AssertionError(f"exited {self.proc.returncode} before {text!r}:\n{self.log_text()[-3000:]}")
            await asyncio.sleep(0.05)

    async def wait_http_ok(self, path: str, *, timeout_s: float = 30) -> None:
        """Wait until GET `path` answers 200 (the web app is up: a fresh interpreter on a busy machine is slow)."""
        assert self.base_url is not None
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
            while True:
                try:
                    if (await http.get(path)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if self.proc.poll() is not None:
                    raise AssertionError(f"exited {self.proc.returncode} before {path} answered:\n{self.log_text()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{path} did not answer 200 in {timeout_s} s:\n{self.log_text()[-3000:]}")
                await asyncio.sleep(0.1)


class Services:
    """Starts commands with a clean environment; `close()` (the fixture calls it) kills every process they made."""

    def __init__(self, log_dir: Path) -> None:
        self.owner = uuid.uuid4().hex
        self.log_dir = log_dir
        self.started: list[Service] = []

    def start(self, *args: str, env: dict[str, str], port: int | None = None) -> Service:
        """Run `slack-backend ARGS` with only PATH, HOME and `env` set (plus PORT when `port` is given)."""
        base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
        full = {**base, "PYTHONPATH": str(ROOT), OWNER_VAR: self.owner, **env}
        if port is not None:
            full["PORT"] = str(port)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{len(self.started):02d}-{'-'.join(args)}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "slack_backend.cli", *args],
                cwd=self.log_dir,  # never the repo root: nothing a command writes lands in the checkout
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        service = Service(proc, log_path, f"http://127.0.0.1:{port}" if port is not None else None)
        self.started.append(service)
        return service

    def owned_pids(self) -> list[int]:
        """Every live process carrying this instance's marker, children of children included."""
        marker = f"{OWNER_VAR}={self.owner}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
        return found

    def close(self) -> None:
        """SIGKILL whatever is left (stopped ones included), reap our own, and wait until every one is gone."""
        doomed = self.owned_pids()
        for pid in doomed:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        for service in self.started:
            service.proc.wait(timeout=10)
        # By pid, not by marker: a dying process's environ already reads empty while it still exists.
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in doomed) and time.monotonic() < deadline:
            time.sleep(0.05)


def gone(pid: int) -> bool:
    """True once `pid` has exited (no longer exists, or is a zombie waiting for its parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state in ("Z", "X")
