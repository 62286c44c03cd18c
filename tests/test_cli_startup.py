"""The command line's light commands start without loading the heavy libraries (checked by module, not by clock)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from slack_backend.cli import SERVICE_COMMANDS, app

# What a light command must never import: each costs from a tenth of a second (sqlalchemy) to over a second
# (anthropic) at start-up, and only `run`, `serve`, `worker`, `try`, `db` and `quota` use them.
HEAVY = ("anthropic", "slack_bolt", "slack_sdk", "starlette", "uvicorn", "sqlalchemy", "httpx", "aiohttp", "alembic")

# Runs the command in-process as the `slack-backend` script does, then prints what it imported as JSON.
PROBE = """
import gc, json, sys
from slack_backend.cli import main
sys.argv = ["slack-backend", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
modules = sorted({name.split(".")[0] for name in sys.modules})
print("\\n" + json.dumps({"exit": code, "modules": modules, "gc": gc.isenabled()}))
"""


def probe(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `slack-backend *args`, which must exit 0: the top-level packages it imported, and whether the garbage
    collector was on at its end."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0, done.stderr
    return report


def loaded_by(args: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages imported by `slack-backend *args`, which must exit 0."""
    return set(probe(args, env)["modules"])


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return base | {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        "SLACK_SIGNING_SECRET": "startup-test-secret",
        "ANTHROPIC_API_KEY": "sk-ant-startup-test",
    }


@pytest.mark.parametrize("args", [["version"], ["jobs", "counts"], ["jobs", "counts", "--json"], ["check-config"]])
def test_light_commands_do_not_import_heavy_libraries(args: list[str], env: dict[str, str]) -> None:
    """version, jobs counts and check-config exit 0 without importing anthropic, Bolt, Starlette or SQLAlchemy."""
    loaded = loaded_by(args, env)
    assert "slack_backend" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_version_imports_neither_redis_nor_the_settings(env: dict[str, str]) -> None:
    """`version` loads no Redis client, no event loop, no settings model, no pydantic and no terminal renderer."""
    loaded = loaded_by(["version"], env)
    unused = {"redis", "hiredis", "asyncio", "pydantic", "pydantic_core", "pydantic_settings", "rich", "structlog"}
    assert sorted(loaded & unused) == []


@pytest.mark.parametrize(
    "args", [["jobs", "counts"], ["jobs", "counts", "--json"], ["check-config"], ["check-config", "--json"]]
)
def test_light_commands_do_not_import_the_terminal_renderer(args: list[str], env: dict[str, str]) -> None:
    """`jobs counts` and `check-config` print their tables as plain text and their `--json` forms without rich."""
    loaded = loaded_by(args, env)
    assert "slack_backend" in loaded
    assert sorted(loaded & {"rich", "pygments"}) == []


@pytest.mark.parametrize("args", [["jobs", "counts"], ["check-config"]])
def test_light_commands_read_the_settings_without_pydantic(args: list[str], env: dict[str, str]) -> None:
    """The settings are checked without pydantic, whose import and schema build were a third of these starts;
    the settings are still read and checked (a bad value exits 2: tests/test_config.py)."""
    report = probe(args, env)
    assert sorted(set(report["modules"]) & {"pydantic", "pydantic_core"}) == []
    # Short-lived: they run with the cyclic garbage collector off.
    assert report["gc"] is False


@pytest.mark.parametrize("name", sorted(SERVICE_COMMANDS))
def test_service_commands_turn_the_garbage_collector_back_on(name: str) -> None:
    """main() starts with the collector off; looking up a command that runs until stopped turns it back on, so
    a long-lived process frees its reference cycles."""
    gc.disable()
    try:
        assert app.get_command(click.Context(app), name) is not None
        assert gc.isenabled()
    finally:
        gc.enable()


def test_heavy_commands_still_find_their_libraries(env: dict[str, str]) -> None:
    """The lazy imports still resolve: `db current` loads SQLAlchemy and alembic when it runs (exit 1: behind)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "db", "current", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exit"] == 1, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[0])["current"] is None
    assert {"sqlalchemy", "alembic"} <= set(report["modules"])
