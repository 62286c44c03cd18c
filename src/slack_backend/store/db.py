"""The database engine, the one MetaData all our tables are declared on, and the dialect helpers they share."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, DateTime, Dialect, Engine, MetaData, Table, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn

from slack_backend.store import _sqlite_inline as sqlite_inline

if TYPE_CHECKING:
    from slack_backend.store.crypto import TokenCipher

T = TypeVar("T")

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_MS = 5_000
PING_TIMEOUT_S = 2.0

# Named constraints, so migrations can find and alter them by name on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


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

    SQLite connections use WAL (readers do not block the writer) with `synchronous=NORMAL` (see
    `_configure_sqlite`), and wait up to `SQLITE_BUSY_TIMEOUT_MS` for a lock instead of failing at once; a new
    SQLite file is made readable by its owner only (it holds tokens and drafts). PostgreSQL connections are checked
    before use, so a restarted server costs no failed request.

    Raises:
        ValueError: the URL names a database other than SQLite or PostgreSQL.
    """
    backend = make_url(database_url).get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"DATABASE_URL must be SQLite or PostgreSQL, not {backend!r}")
    if backend == "postgresql":
        return create_async_engine(database_url, pool_pre_ping=True)
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file:") or make_url(database_url).query:
        # A memory database or a URI keeps aiosqlite's thread (tests and tools; SQLAlchemy picks their pool).
        engine = create_async_engine(database_url)
        event.listen(engine.sync_engine, "connect", _sqlite_configurer(SQLITE_BUSY_TIMEOUT_MS))
        return engine
    _create_private_file(database)
    # A file database runs on the event loop's thread (store/_sqlite_inline.py): a busy timeout of 0 there, and
    # the statement that finds the database locked waits on a thread for up to SQLITE_BUSY_TIMEOUT_MS.
    engine = create_async_engine(
        database_url,
        async_creator=functools.partial(sqlite_inline.connect, database, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS),
    )
    event.listen(engine.sync_engine, "connect", _sqlite_configurer(0))
    return engine


def _create_private_file(path: str) -> None:
    # Made here, mode 0600, before SQLite would make it with the umask's (often world-readable) permissions.
    # An existing file is left as its owner set it; a missing directory is SQLite's error to report.
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _sqlite_configurer(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    """The `connect` listener that sets up each new SQLite connection of an engine."""

    def configure(dbapi_connection: Any, _connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            # Under WAL, NORMAL syncs the log at checkpoints rather than at every commit: a commit costs ~0.02 ms,
            # not 2-7 ms of fsync on this project's machines (two commits sit on a draft's path). A process crash
            # loses nothing; a power cut or OS crash may roll back the last commits, never corrupt the file. SQLite
            # is the embedded default; production runs PostgreSQL (docs/operations.md, "The database").
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        finally:
            cursor.close()

    return configure


async def create_tables(engine: AsyncEngine, cipher: TokenCipher | None = None) -> None:
    """Bring the schema to the newest migration and encrypt plaintext tokens when `cipher` is given.

    Every process runs this at start; see `store/migrate.py`.
    """
    # Imported here: migrate.py imports the table modules, which import this one.
    from slack_backend.store.migrate import upgrade

    await upgrade(engine, cipher)


async def ping(engine: AsyncEngine, *, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Return True when the database answers a trivial query within `timeout_s`; never raises (for /readyz)."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        # Any failure (refused, timeout, auth, driver) means "not ready"; the probe reports it, it does not crash.
        return False
    return True


async def in_transaction(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """`work(connection)` in one transaction: committed when it returns, rolled back if it raises.

    `work` is synchronous SQLAlchemy Core, and the whole transaction runs in one of SQLAlchemy's greenlets, as
    `AsyncConnection.run_sync` does. The async API spends a greenlet on each of connect, begin, commit and close,
    and a task to shield the close: about 0.2 ms of CPU for an empty transaction, against 0.07 ms here (measured,
    docs/performance.md, round 12), on every write a job makes on its way to the user. A cancellation reaches
    `work` at the driver's next await, as it would reach an awaited `execute`; the transaction is then rolled back.
    """
    return await greenlet_spawn(_transaction, engine.sync_engine, work)


async def in_connection(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """`work(connection)` on one connection, committing nothing (reads): `in_transaction`'s way, without a commit."""
    return await greenlet_spawn(_connection, engine.sync_engine, work)


def _transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)


def _connection(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return work(conn)


def dialect_insert(engine: AsyncEngine, table: Table) -> sqlite.Insert | postgresql.Insert:
    """Return an INSERT for `table` that supports ON CONFLICT on this engine's backend."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
