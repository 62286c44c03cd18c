"""The systems compared and how each driver is launched: ours and raw redis-py here, peers from their own envs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import ROOT, log_file

BENCH = ROOT / "bench"
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"
NODE_DIR = BENCH / "node"
SETUP_HINT = "run bench/setup_peers.sh"


@dataclass(frozen=True)
class System:
    """One system under test; `key` is its --only name, `runtime` says which interpreter runs its driver."""

    key: str
    name: str
    runtime: str  # "project" (this virtualenv), "peers" (bench/.venv-peers) or "node"
    module: str = ""

    @property
    def is_peer(self) -> bool:
        return self.key not in ("ours", "raw")

    def command(self, cfg: dict[str, Any]) -> list[str]:
        """The driver's command line; raises RuntimeError with the reason when its runtime is not installed."""
        arg = json.dumps(cfg)
        if self.runtime == "project":
            return [sys.executable, "-m", self.module, "run", arg]
        if self.runtime == "peers":
            if not PEERS_PYTHON.exists():
                raise RuntimeError(f"bench/.venv-peers is missing ({SETUP_HINT})")
            return [str(PEERS_PYTHON), "-m", self.module, "run", arg]
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        if not (NODE_DIR / "node_modules" / "bullmq").exists():
            raise RuntimeError(f"bench/node/node_modules has no bullmq ({SETUP_HINT})")
        return [node, str(NODE_DIR / "bench.mjs"), "run", arg]


SYSTEMS: tuple[System, ...] = (
    System("ours", "ours", "project", "bench.drivers.ours"),
    System("raw", "raw-redis-py", "project", "bench.drivers.raw"),
    System("bullmq", "bullmq", "peers", "bench.drivers.bullmq"),
    System("bullmq-node", "bullmq-node", "node"),
    System("saq", "saq", "peers", "bench.drivers.saq"),
    System("taskiq", "taskiq-redis", "peers", "bench.drivers.taskiq"),
    System("dramatiq", "dramatiq", "peers", "bench.drivers.dramatiq"),
    System("arq", "arq", "peers", "bench.drivers.arq"),
)


async def run_system(system: System, cfg: dict[str, Any], *, timeout_s: float, log_path: Path) -> dict[str, Any]:
    """Run one driver to completion; any failure to start or finish comes back as {"unavailable": reason}."""
    try:
        args = system.command(cfg)
    except RuntimeError as exc:
        return {"system": system.name, "unavailable": str(exc)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with log_file(log_path) as err:
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err
        )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"system": system.name, "unavailable": f"driver did not finish within {timeout_s:.0f} s"}
    lines = [ln for ln in stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        return {
            "system": system.name,
            "unavailable": f"driver exited {proc.returncode} without figures{_tail(log_path)}",
        }
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result and "unavailable" not in result:
        result["unavailable"] = result.pop("error")
    return result


def _tail(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return f": {' | '.join(lines[-2:])[-300:]}" if lines else ""
