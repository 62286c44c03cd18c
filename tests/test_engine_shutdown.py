"""Graceful shutdown of worker processes: finish in-flight work, release what cannot finish, start nothing new."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from redis.asyncio import Redis

from slack_backend.queue import BulkJob, JobState, Queue
from slack_backend.queue.runner import EXIT_ON_SECOND_SIGNAL
from tests.support.engine import QueueFactory, wait_until
from tests.support.procs import recorded_runs, spawn_worker


async def in_processor(client: Redis, queue: Queue, count: int) -> bool:
    """Whether `count` jobs are inside the worker's processor: each run sets its marker key on entry
    (tests/support/worker_proc.py). Redis's ACTIVE count is not enough: a job is active once fetched, before the
    worker has read the reply, and a fetch read after the signal is handed straight back (by design), not run."""
    return len(await client.keys(f"{queue.keys.tag}:test:marker:*")) == count


async def test_sigterm_finishes_in_flight_jobs_and_starts_nothing_new(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """SIGTERM with 5 jobs in flight: all 5 complete, nothing new starts, nothing is left active, exit 0."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {"ms": 1000}) for _ in range(8)])
    cfg = {"url": redis_url, "prefix": prefix, "concurrency": 5, "shutdown_timeout_s": 10}
    proc = spawn_worker(cfg, tmp_path / "w.log")

    await wait_until(lambda: in_processor(redis_client, queue, 5), timeout_s=15)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 5
    assert counts[JobState.ACTIVE] == 0
    assert counts[JobState.WAITING] == 3
    assert len(await recorded_runs(redis_client, queue)) == 5, "no job started after the signal"


async def test_sigterm_releases_jobs_longer_than_the_timeout_at_once(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """Jobs longer than the shutdown timeout go back to waiting at the timeout, attempts unchanged; exit 0."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {"ms": 60_000}) for _ in range(5)])
    cfg = {"url": redis_url, "prefix": prefix, "concurrency": 5, "shutdown_timeout_s": 0.5}
    proc = spawn_worker(cfg, tmp_path / "w.log")

    await wait_until(lambda: in_processor(redis_client, queue, 5), timeout_s=15)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    took_s = time.monotonic() - t0
    counts = await queue.counts()
    assert counts[JobState.ACTIVE] == 0
    assert counts[JobState.WAITING] == 5
    # Not before the 0.5 s timeout (the jobs got their time), and long before the 60 s jobs would end: 4.5 s over
    # the timeout leaves room for a process exit and a slow housekeeping call on a loaded 2-core machine.
    assert 0.5 <= took_s < 0.5 + 4.5, f"exit took {took_s:.2f} s with a 0.5 s timeout"
    for job in await queue.get_jobs(JobState.WAITING):
        assert job.attempts_made == 0
        assert job.stalls == 0


async def test_second_signal_exits_at_once(
    make_queue: QueueFactory, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """A second SIGTERM exits the process straight away; its jobs stay leased until the stall check recovers them."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {"ms": 60_000}) for _ in range(2)])
    cfg = {"url": redis_url, "prefix": prefix, "concurrency": 2, "shutdown_timeout_s": 30}
    proc = spawn_worker(cfg, tmp_path / "w.log")

    async def two_active() -> bool:
        return (await queue.counts())[JobState.ACTIVE] == 2

    await wait_until(two_active, timeout_s=15)
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 5) == EXIT_ON_SECOND_SIGNAL
    assert time.monotonic() - t0 < 1
    assert (await queue.counts())[JobState.ACTIVE] == 2
