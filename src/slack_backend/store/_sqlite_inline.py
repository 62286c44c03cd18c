"""SQLite on the event loop's own thread, for SQLAlchemy's async engine: the aiosqlite driver's API, run in place.

aiosqlite runs every call (cursor, execute, fetch, commit, the pool's rollback) on a thread of its own and hands
the result back through the event loop: about 0.4 ms of CPU and 0.6 ms of wall time a transaction, against
0.04 ms for the statement itself (WAL with `synchronous=NORMAL`, see store/db.py). A draft runs several
transactions on its way to the user, so the hand-offs were a large part of our overhead on it.

A statement here runs where it is called, so it must never wait on a lock with the loop blocked: connections are
opened with a busy timeout of 0, and a statement that finds the database locked by another connection (another
worker process writing) is run again on a thread, which waits up to the engine's busy timeout as aiosqlite did. A
locked statement has done nothing, so running it again is safe. What is left on the loop is SQLite's own work: tens
of microseconds a statement, and the WAL checkpoint's fsync about once in 1,000 written pages.

`connect` is given to `create_async_engine(async_creator=...)`; SQLAlchemy wraps the connection in its aiosqlite
adapter, which only awaits the methods below.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

T = TypeVar("T")

# SQLite's primary result codes for "another connection holds the lock"; extended codes keep them in the low byte.
_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _locked(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _LOCK_CODES


class InlineCursor:
    """A sqlite3 cursor whose calls are awaitable, as aiosqlite's are; each runs at once."""

    def __init__(self, connection: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        await self._connection.run(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]) -> InlineCursor:
        await self._connection.run(self._cursor.executemany, sql, list(parameters))
        return self

    async def fetchone(self) -> Any:
        return await self._connection.run(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return await self._connection.run(self._cursor.fetchmany, self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return await self._connection.run(self._cursor.fetchall)

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """A sqlite3 connection with aiosqlite's awaitable methods, run in place; a locked call waits on a thread."""

    def __init__(self, connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
        self._conn = connection
        self._busy_timeout_ms = busy_timeout_ms
        self._open = True

    @property
    def _connection(self) -> sqlite3.Connection | None:
        # SQLAlchemy's adapter commits and rolls back only while aiosqlite's inner connection is set.
        return self._conn if self._open else None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one call on the connection; when another connection holds the lock, wait for it on a thread."""
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
        waiting = asyncio.get_running_loop().run_in_executor(None, self._run_waiting, fn, args)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            # The connection is not free for the next call (a rollback, the pool's reset) until the thread is done
            # with it: otherwise that call would block the loop on SQLite's connection mutex.
            await asyncio.wait([waiting])
            raise

    def _run_waiting(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # On the thread the busy timeout applies; the loop's calls go back to failing at once afterwards.
        self._conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            return fn(*args)
        finally:
            self._conn.execute("PRAGMA busy_timeout=0")

    @property
    def _tx(self) -> _InPlaceQueue:
        # SQLAlchemy's aiosqlite adapter sets the isolation level by queueing a call for aiosqlite's thread.
        return _InPlaceQueue()

    def cursor(self) -> InlineCursor:
        return InlineCursor(self, self._conn.cursor())

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = cast(Any, value)  # sqlite3 also takes "" (its default), beyond its stubs

    async def commit(self) -> None:
        await self.run(self._conn.commit)

    async def rollback(self) -> None:
        await self.run(self._conn.rollback)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close at once (also SQLAlchemy's forced close of a connection it gave up on)."""
        self._open = False
        self._conn.close()


class _InPlaceQueue:
    """Runs a queued (future, call) pair at once, as aiosqlite's thread would run it later."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


async def connect(database: str, *, busy_timeout_ms: int) -> InlineConnection:
    """Open `database` (a file path) for use on the event loop, with a busy timeout of 0 (see the module's doc)."""
    # check_same_thread=False: a locked statement is run again on a worker thread, while the loop awaits it.
    connection = sqlite3.connect(database, timeout=0, check_same_thread=False)
    return InlineConnection(connection, busy_timeout_ms)
