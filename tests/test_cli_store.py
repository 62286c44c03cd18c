"""`slack-backend db` and `tokens` commands, run as real processes: migrations, key rotation, and the key check."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from slack_sdk.oauth.installation_store.models.installation import Installation

from slack_backend.store import TokenCipher, create_engine, create_tables, installation_store
from slack_backend.store.migrate import head_revision

CLIENT_ID = "1111.2222"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {key: os.environ[key] for key in ("PATH", "HOME", "PYTHONPATH") if key in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", *args],
        env=base | {"LOG_FORMAT": "json"} | env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_db_upgrade_and_current(tmp_path: Path) -> None:
    """`db current` exits 1 on a database behind the code; `db upgrade --json` brings it to head; then current is 0."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}

    behind = await asyncio.to_thread(cli, env, "db", "current", "--json")
    upgraded = await asyncio.to_thread(cli, env, "db", "upgrade", "--json")
    current = await asyncio.to_thread(cli, env, "db", "current", "--json")

    assert behind.returncode == 1
    assert json.loads(behind.stdout) == {"current": None, "head": head_revision()}
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout) == {"before": None, "after": head_revision()}, "stdout holds only the answer"
    assert current.returncode == 0
    assert json.loads(current.stdout)["current"] == head_revision()


async def test_rotate_key_command_reencrypts_so_the_old_key_can_go(tmp_path: Path) -> None:
    """`tokens rotate-key` with "NEW,OLD" rewrites every token under NEW; a store holding NEW alone reads them."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    old, new = TokenCipher.new_key(), TokenCipher.new_key()
    engine = create_engine(url)
    try:
        await create_tables(engine)
        await installation_store(engine, CLIENT_ID, TokenCipher([old])).async_save(
            Installation(app_id="A1", enterprise_id=None, team_id="T1", user_id="U1", bot_token="xoxb-rotate-me")
        )
        proc = await asyncio.to_thread(
            cli, {"DATABASE_URL": url, "TOKEN_ENCRYPTION_KEY": f"{new},{old}"}, "tokens", "rotate-key", "--json"
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"reencrypted": 2}  # slack_installations and slack_bots
        bot = await installation_store(engine, CLIENT_ID, TokenCipher([new])).async_find_bot(
            enterprise_id=None, team_id="T1"
        )
    finally:
        await engine.dispose()
    assert bot is not None
    assert bot.bot_token == "xoxb-rotate-me"


def test_oauth_mode_without_a_key_exits_2_naming_the_variable() -> None:
    """Starting in OAuth mode with no TOKEN_ENCRYPTION_KEY stops with exit 2 and names the variable."""
    proc = cli({"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "s3cret"}, "run")

    assert proc.returncode == 2
    assert "TOKEN_ENCRYPTION_KEY" in proc.stderr
