"""Schema changes through Alembic: bring any database (new, made by `create_all` before migrations, older) to head."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.logging import get_logger
from slack_backend.store.crypto import TokenCipher
from slack_backend.store.installations import reencrypt_tokens

log = get_logger(__name__)

# The revision that reproduces the schema `create_all` made before migrations existed.
BASELINE_REVISION = "0001"
# Any constant works: it only has to be the same in every process that migrates.
_MIGRATE_LOCK_ID = 0x5B_7AB1E5
# A table every pre-migration database has (create_all made them all at once).
_BASELINE_TABLE = "request_audit"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "slack_backend.store:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError("no migrations found")
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> tuple[str | None, str]:
    before = _current(connection)
    tables = inspect(connection)
    if before is None and tables.has_table(_BASELINE_TABLE):
        # Made by create_all before migrations: its tables are revision 0001 exactly, so say so and go on from there.
        command.stamp(_config(connection), BASELINE_REVISION)
        before = BASELINE_REVISION
    command.upgrade(_config(connection), "head")
    return before, head_revision()


@asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold an exclusive lock on `<database>.migrate-lock` (SQLite runs DDL outside transactions, so processes
    starting together would both try to create the same table); nothing for PostgreSQL or an in-memory database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    fd = os.open(f"{database}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        # In a thread: waiting for another process's migration must not block this event loop.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


async def upgrade(engine: AsyncEngine, cipher: TokenCipher | None = None) -> tuple[str | None, str]:
    """Apply every migration not yet applied, in one transaction; safe to run from many processes at once.

    With `cipher` (TOKEN_ENCRYPTION_KEY is set), tokens still stored in plaintext (saved before encryption existed)
    are then encrypted; without it they are left as they are.

    Returns:
        The revision before (None for an empty database) and after.
    """
    async with _sqlite_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Processes starting together would otherwise race to apply the same migration and one would fail.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:lock_id)"), {"lock_id": _MIGRATE_LOCK_ID})
        before, after = await conn.run_sync(_upgrade)
    if before != after:
        log.info("database migrated", before=before, after=after)
    if cipher is not None:
        sealed = await reencrypt_tokens(engine, cipher, plaintext_only=True)
        if sealed:
            log.info("plaintext Slack tokens encrypted", tokens=sealed)
    return before, after


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision: None when it has no migration applied (empty, or made before migrations)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
