"""Schema migrations on SQLite and PostgreSQL: revision 0001 is the old schema, and upgrading it loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store import AuditLog, QuotaStore, TokenCipher, create_tables, installation_store, metadata
from slack_backend.store.crypto import is_encrypted
from slack_backend.store.migrate import current_revision, head_revision, upgrade
from tests.support.databases import BACKENDS, another_engine, create_legacy_schema, empty_database

CLIENT_ID = "1111.2222"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with empty_database(request.param, tmp_path) as engine:
        yield engine


def _describe(conn: Connection) -> dict[str, Any]:
    found = inspect(conn)
    shape: dict[str, Any] = {}
    for table in sorted(set(found.get_table_names()) - {"alembic_version"}):
        shape[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)],
            "pk": found.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(table)
            ),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(table)),
            "checks": sorted(str(c["name"]) for c in found.get_check_constraints(table)),
        }
    return shape


async def test_revision_0001_reproduces_the_schema_create_all_made(database: AsyncEngine, tmp_path: Path) -> None:
    """Migrating an empty database to 0001 gives the same tables, columns, keys and indexes as the old create_all."""
    from alembic import command

    from slack_backend.store.migrate import _config

    async with database.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), "0001"))
        migrated = await conn.run_sync(_describe)
    (tmp_path / "legacy").mkdir()
    async with empty_database(database.dialect.name, tmp_path / "legacy") as legacy:
        await create_legacy_schema(legacy)
        async with legacy.connect() as conn:
            made_by_create_all = await conn.run_sync(_describe)

    assert migrated == made_by_create_all
    assert set(migrated) == {
        "request_audit",
        "slack_bots",
        "slack_installations",
        "slack_oauth_states",
        "workspace_quota",
    }


async def test_models_match_the_newest_migration(database: AsyncEngine) -> None:
    """The tables the code declares are exactly what the migrations build: no change is missing a migration."""
    await create_tables(database)

    def differences(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))

    async with database.connect() as conn:
        assert await conn.run_sync(differences) == []
    assert await current_revision(database) == head_revision()


async def test_upgrading_old_database_keeps_every_row_and_encrypts_tokens(database: AsyncEngine) -> None:
    """A database made before migrations, with data, upgrades to head; rows survive and tokens get encrypted."""
    await create_legacy_schema(database)
    naive_now = NOW.replace(tzinfo=None)
    # Audit and quota rows written by the (unchanged) code that wrote them before migrations.
    audit = AuditLog(database, clock=lambda: NOW)
    await audit.record_queued("Ev1", "T0001", "U0001", "C0001", "mention")
    await audit.record_started("Ev1", 1)
    await audit.record_finished("Ev1", "completed", input_tokens=120, output_tokens=30)
    await QuotaStore(database, clock=lambda: NOW).set_daily_tokens("T0001", 5000)
    async with database.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO slack_bots (client_id, app_id, team_id, bot_token, bot_id, bot_user_id, bot_scopes,"
                " is_enterprise_install, installed_at) VALUES"
                " (:client, 'A0001', 'T0001', 'xoxb-legacy-plain', 'B0001', 'U0BOT', 'chat:write', false, :t)"
            ),
            {"client": CLIENT_ID, "t": naive_now},
        )
        await conn.execute(
            text(
                "INSERT INTO slack_installations (client_id, app_id, team_id, bot_token, user_id, user_token,"
                " is_enterprise_install, installed_at) VALUES"
                " (:client, 'A0001', 'T0001', 'xoxb-legacy-plain', 'U0001', 'xoxp-legacy-user', false, :t)"
            ),
            {"client": CLIENT_ID, "t": naive_now},
        )
        await conn.execute(
            text("INSERT INTO slack_oauth_states (state, expire_at) VALUES ('st-1', :t)"), {"t": naive_now}
        )
    assert await current_revision(database) is None
    cipher = TokenCipher([TokenCipher.new_key()])

    before, after = await upgrade(database, cipher)

    assert (before, after) == ("0001", head_revision())
    [row] = await AuditLog(database).recent()
    assert (row.job_id, row.status, row.input_tokens, row.output_tokens, row.finished_at) == (
        "Ev1",
        "completed",
        120,
        30,
        NOW,
    )
    assert await AuditLog(database).tokens_used("T0001", NOW) == 150
    assert await QuotaStore(database).overrides() == {"T0001": 5000}
    async with database.connect() as conn:
        stored = (await conn.execute(text("SELECT bot_token, user_token FROM slack_installations"))).one()
        states = (await conn.execute(text("SELECT state FROM slack_oauth_states"))).scalars().all()
    assert all(is_encrypted(value) for value in stored)
    assert states == ["st-1"]
    store = installation_store(database, CLIENT_ID, cipher)
    bot = await store.async_find_bot(enterprise_id=None, team_id="T0001")
    user = await store.async_find_installation(enterprise_id=None, team_id="T0001", user_id="U0001")
    assert bot is not None
    assert user is not None
    assert (bot.bot_token, bot.bot_scopes, user.user_token) == ("xoxb-legacy-plain", ["chat:write"], "xoxp-legacy-user")
    # Every later start migrates nothing and rewrites nothing.
    encrypted = stored
    assert await upgrade(database, cipher) == (head_revision(), head_revision())
    async with database.connect() as conn:
        assert (await conn.execute(text("SELECT bot_token, user_token FROM slack_installations"))).one() == encrypted


async def test_upgrade_without_key_leaves_tokens_for_a_later_start(database: AsyncEngine) -> None:
    """Migrating with no TOKEN_ENCRYPTION_KEY (single-workspace mode) changes schema only, never token values."""
    await create_legacy_schema(database)
    async with database.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO slack_bots (client_id, app_id, team_id, bot_token, is_enterprise_install, installed_at)"
                " VALUES (:client, 'A0001', 'T0001', 'xoxb-legacy-plain', false, :t)"
            ),
            {"client": CLIENT_ID, "t": NOW.replace(tzinfo=None)},
        )

    await upgrade(database)

    async with database.connect() as conn:
        assert await conn.scalar(text("SELECT bot_token FROM slack_bots")) == "xoxb-legacy-plain"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_processes_starting_together_migrate_once(backend: str, tmp_path: Path) -> None:
    """Processes upgrading one database at once take turns (a PostgreSQL advisory lock, a lock file beside a SQLite
    database): all succeed, and the schema is made once."""
    async with empty_database(backend, tmp_path) as first:
        others = [await another_engine(first) for _ in range(3)]
        try:
            results = await asyncio.gather(upgrade(first), *(upgrade(engine) for engine in others))
        finally:
            for engine in others:
                await engine.dispose()
    befores = sorted(before or "" for before, _ in results)
    assert befores == ["", head_revision(), head_revision(), head_revision()], "one made it, the others found it"
    assert {after for _, after in results} == {head_revision()}
