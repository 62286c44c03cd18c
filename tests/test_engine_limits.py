"""The global rate limit across processes, and per-worker concurrency."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from redis.asyncio import Redis

from slack_backend.queue import BulkJob, Job, JobState, QueueLimits, RateLimit, Worker
from tests.support.engine import QueueFactory, finished, running, wait_until
from tests.support.measures import max_in_window
from tests.support.procs import live_workers, recorded_runs, spawn_worker


async def test_rate_limit_holds_across_three_processes(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """3 worker processes, 300 jobs, 10/s: no sliding 1000 ms window has more than 10 starts; mean >= 9.5/s."""
    queue = make_queue()
    await queue.set_limits(QueueLimits(rate=RateLimit(10, 1000)))
    await queue.add_bulk([BulkJob("r", {"ms": 5}) for _ in range(300)])
    cfg = {"url": redis_url, "prefix": prefix, "concurrency": 5, "rate": [10, 1000]}
    procs = [spawn_worker(cfg, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        await wait_until(lambda: finished(queue, 300), timeout_s=60, every_s=0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=20) == 0
    jobs = await queue.get_jobs(JobState.COMPLETED)
    starts = [j.processed_ms for j in jobs if j.processed_ms is not None]
    assert len(starts) == 300
    worst = max_in_window(starts, 1000)
    span_s = (max(starts) - min(starts)) / 1000
    # 300 starts allow 290 gaps of 100 ms after the first burst of 10: the mean over the run.
    mean_rate = (len(starts) - 10) / span_s
    runs = await recorded_runs(redis_client, queue)
    print(f"\nrate limit: {len(starts)} starts in {span_s:.2f} s, max/1s window {worst}, mean {mean_rate:.2f}/s")
    assert worst <= 10
    assert mean_rate >= 9.5
    assert len({r["worker"] for r in runs}) == 3, "all three processes took part"
    assert await live_workers(queue) == 0


async def test_peak_concurrency_per_worker_is_exactly_five(make_queue: QueueFactory) -> None:
    """Under a backlog a worker with concurrency 5 runs exactly 5 jobs at once, never more."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("c", {}) for _ in range(40)])
    in_flight = 0
    peak = 0

    async def processor(job: Job) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1

    async with running(Worker(queue, processor, concurrency=5)):
        await wait_until(lambda: finished(queue, 40))
    assert peak == 5


async def test_limited_worker_sleeps_until_the_next_slot(make_queue: QueueFactory) -> None:
    """At 5 per 500 ms the 6th start comes ~500 ms after the 1st: the worker neither polls early nor oversleeps."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("s", {}) for _ in range(6)])
    starts: list[float] = []

    async def processor(job: Job) -> None:
        starts.append(time.monotonic())

    worker = Worker(queue, processor, concurrency=10, limits=QueueLimits(rate=RateLimit(5, 500)))
    async with running(worker):
        await wait_until(lambda: finished(queue, 6))
    gap_ms = (starts[5] - starts[0]) * 1000
    assert 495 <= gap_ms <= 550, gap_ms


async def test_a_start_holds_its_slot_for_the_window_plus_the_guard_band(make_queue: QueueFactory) -> None:
    """RateLimit(2, 200, margin_ms=800): after two starts the next may come 1,000 ms later, not 200."""
    queue = make_queue()
    await queue.set_limits(QueueLimits(rate=RateLimit(2, 200, margin_ms=800)))
    assert (await queue.limits()).rate == RateLimit(2, 200, margin_ms=800)
    await queue.add_bulk([BulkJob("n", {}) for _ in range(3)])
    first = list(await queue.call("fetch", "w", 30_000, 3))
    assert (len(first) - 2) // 4 == 2
    limited = list(await queue.call("fetch", "w", 30_000, 1))
    assert int(limited[0]) == 2
    assert 900 < int(limited[1]) <= 1000, "the wait runs to the window's end plus the margin"
    await asyncio.sleep(0.3)
    assert int((await queue.call("fetch", "w", 30_000, 1))[0]) == 2, "past the window, still inside the margin"
    await asyncio.sleep(0.75)
    assert int((await queue.call("fetch", "w", 30_000, 1))[0]) == 0
