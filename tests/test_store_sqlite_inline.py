"""SQLite on the event loop's thread (store/_sqlite_inline.py): statements run in place, a lock held by another
process is waited for on a thread without stalling the loop, and nothing is lost or left half-done on the way."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store import create_engine

counters = Table("counters", MetaData(), Column("id", String, primary_key=True), Column("n", Integer))

# A separate process takes SQLite's write lock (BEGIN IMMEDIATE), says so, holds it for HOLD_S, then commits.
HOLD_S = 0.6
LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE counters SET n = n + 100 WHERE id = 'a'")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    async with made.begin() as conn:
        await conn.run_sync(counters.metadata.create_all)
        await conn.execute(counters.insert().values(id="a", n=0))
    yield made
    await made.dispose()


@contextmanager
def write_lock_held(engine: AsyncEngine, seconds: float) -> Iterator[None]:
    """Another process holds the database's write lock from entry for `seconds`; on exit it has committed."""
    path = str(engine.url.database)
    with subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, path, str(seconds)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield
        proc.stdout.read()
        assert proc.wait(timeout=10) == 0


async def largest_gap_while(work: asyncio.Task[object]) -> float:
    """The longest the event loop went without running a 5 ms ticker while `work` ran (seconds)."""
    gap, last = 0.0, time.monotonic()
    while not work.done():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        gap, last = max(gap, now - last), now
    return gap


async def increment(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(counters).where(counters.c.id == "a").values(n=counters.c.n + 1))


async def value(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(counters.c.n))).scalar_one())


async def test_statements_run_on_the_event_loops_thread(engine: AsyncEngine) -> None:
    """A statement runs on the thread that awaits it: no hand-off to a driver thread and back."""
    ran_on: list[int] = []

    def whoami() -> int:
        ran_on.append(threading.get_ident())
        return 1

    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        raw.driver_connection._conn.create_function("whoami", 0, whoami)
        assert await conn.scalar(text("SELECT whoami()")) == 1
    assert ran_on == [threading.get_ident()]


async def test_a_write_waits_for_another_processs_lock_without_stalling_the_loop(engine: AsyncEngine) -> None:
    """While another process holds the write lock, our write waits for it on a thread (the loop keeps running every
    few ms), then commits: both writes are there, ours after theirs."""
    with write_lock_held(engine, HOLD_S):
        started = time.monotonic()
        write = asyncio.create_task(increment(engine))
        gap = await largest_gap_while(write)
        await write
        waited = time.monotonic() - started
    assert waited >= HOLD_S * 0.5, "the write did not wait for the lock"
    assert gap < 0.2, f"the event loop stalled {gap * 1000:.0f} ms while the write waited"
    assert await value(engine) == 101


async def test_a_read_is_not_blocked_by_another_processs_write_lock(engine: AsyncEngine) -> None:
    """Under WAL a reader never waits for a writer: the committed value is read at once."""
    with write_lock_held(engine, HOLD_S):
        started = time.monotonic()
        assert await value(engine) == 0
        assert time.monotonic() - started < HOLD_S / 2


async def test_a_write_cancelled_while_it_waits_leaves_nothing_and_the_engine_works_after(
    engine: AsyncEngine,
) -> None:
    """Cancelling a write that waits on the lock rolls it back; the connection goes back to the pool usable."""
    with write_lock_held(engine, HOLD_S):
        write = asyncio.create_task(increment(engine))
        await asyncio.sleep(0.1)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
    assert await value(engine) == 100, "the cancelled write left nothing"
    for _ in range(3):
        await increment(engine)
    assert await value(engine) == 103


async def test_concurrent_transactions_in_one_process_each_commit_once(engine: AsyncEngine) -> None:
    """50 concurrent increments through the pool: every one counted, none twice (one writer at a time in SQLite)."""
    await asyncio.gather(*(increment(engine) for _ in range(50)))
    assert await value(engine) == 50
