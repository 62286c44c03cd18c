"""`slack-backend quota`: overrides set from the command line are what the quota guard reads."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from slack_backend.store import QuotaStore, create_engine
from tests.support.cli import run_in_process
from tests.support.procs import ROOT


def quota_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`slack-backend quota ...` as a real process, with only the variables it needs."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "WORKSPACE_DAILY_TOKEN_QUOTA": "1000",
    }
    return subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", "quota", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def quota_in_process(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command through the click app in this process (no interpreter start-up), from a thread."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", "WORKSPACE_DAILY_TOKEN_QUOTA": "1000"}
    return await asyncio.to_thread(run_in_process, ["quota", *args], env)


async def test_set_show_unset_round_trip(tmp_path: Path) -> None:
    """set stores an override the store returns, show lists it with the default, unset falls back to the default."""
    # The first as a real process (exit code and environment as an operator runs it), the rest in-process.
    assert quota_cli(tmp_path, "set", "T0QUOTA1", "50000").returncode == 0
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert await QuotaStore(engine).daily_tokens("T0QUOTA1", 1000) == 50000
        shown = json.loads((await quota_in_process(tmp_path, "show", "--json")).stdout)
        assert shown == {
            "default_daily_tokens": 1000,
            "workspaces": [{"workspace": "T0QUOTA1", "daily_tokens": 50000, "override": True, "used_today": 0}],
        }
        assert (await quota_in_process(tmp_path, "unset", "T0QUOTA1")).returncode == 0
        assert await QuotaStore(engine).daily_tokens("T0QUOTA1", 1000) == 1000
    finally:
        await engine.dispose()


def test_negative_quota_is_bad_usage(tmp_path: Path) -> None:
    """A negative number is refused as bad usage (exit 2)."""
    assert quota_cli(tmp_path, "set", "T0QUOTA1", "--", "-5").returncode == 2
