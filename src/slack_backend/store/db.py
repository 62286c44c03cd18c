"""The database engine, the one MetaData all our tables are declared on, and the dialect helpers they share."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, MetaData, Table, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_MS = 5_000
PING_TIMEOUT_S = 2.0

# Named constraints, so a later migration tool can find and alter them by name on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Any constant works: it only has to be the same in every process that creates tables.
_CREATE_TABLES_LOCK_ID = 0x5B_7AB1E5
# Passes of create_tables on SQLite when another process created a table between our check and our CREATE.
_CREATE_TABLES_TRIES = 5


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored as UTC and always read back timezone-aware.

    SQLite keeps no zone and returns naive values; PostgreSQL returns the session's zone. Both come back in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value is ambiguous (local time? UTC?), and guessing wrong shifts quotas by hours.
            raise ValueError("datetime must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def create_engine(database_url: str) -> AsyncEngine:
    """Create the async engine for `DATABASE_URL`.

    SQLite connections use WAL (readers do not block the writer) and wait up to `SQLITE_BUSY_TIMEOUT_MS` for a
    lock instead of failing at once; PostgreSQL connections are checked before use, so a restarted server costs
    no failed request.

    Raises:
        ValueError: the URL names a database other than SQLite or PostgreSQL.
    """
    backend = make_url(database_url).get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"DATABASE_URL must be SQLite or PostgreSQL, not {backend!r}")
    if backend == "postgresql":
        return create_async_engine(database_url, pool_pre_ping=True)
    engine = create_async_engine(database_url)
    event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


async def create_tables(engine: AsyncEngine) -> None:
    """Create every table of ours that does not exist yet (Slack installations, OAuth states, audit, quotas)."""
    # The table modules declare themselves on `metadata` when imported; importing any module of this package runs
    # `store/__init__.py`, which imports them all, so none can be missing here.
    for attempt in range(1, _CREATE_TABLES_TRIES + 1):
        try:
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Processes starting together would otherwise race to create the same table and one would fail.
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:lock_id)"), {"lock_id": _CREATE_TABLES_LOCK_ID}
                    )
                await conn.run_sync(metadata.create_all)
            return
        except OperationalError as exc:
            # SQLite has no advisory lock: two processes starting together (`worker --processes N`) can both see a
            # table missing, and one's CREATE TABLE then fails. The next pass sees the table and goes on.
            if engine.dialect.name != "sqlite" or "already exists" not in str(exc) or attempt == _CREATE_TABLES_TRIES:
                raise


async def ping(engine: AsyncEngine, *, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Return True when the database answers a trivial query within `timeout_s`; never raises (for /readyz)."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        # Any failure (refused, timeout, auth, driver) means "not ready"; the probe reports it, it does not crash.
        return False
    return True


def dialect_insert(engine: AsyncEngine, table: Table) -> sqlite.Insert | postgresql.Insert:
    """Return an INSERT for `table` that supports ON CONFLICT on this engine's backend."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
