"""The global rate limit across processes, counted where the processors see each start; per-worker concurrency."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from slack_backend.queue import BulkJob, Job, JobState, QueueLimits, RateLimit, Worker
from slack_backend.queue.limits import DEFAULT_RATE_MARGIN_MS
from tests.support.engine import QueueFactory, finished, running, wait_until
from tests.support.fleet import FleetFactory
from tests.support.measures import max_in_window
from tests.support.procs import live_workers, recorded_runs

WINDOW_MS = 500
# How late a start may reach its processor on a busy 2-core machine, beyond what the guard band absorbs (see below).
HANDOFF_SLACK_MS = 40


async def test_rate_limit_holds_across_three_processes(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, fleet: FleetFactory
) -> None:
    """3 worker processes, 150 jobs, 10 per 500 ms: never 11 starts in a window, at the processors or in Redis."""
    queue = make_queue()
    await queue.set_limits(QueueLimits(rate=RateLimit(10, WINDOW_MS)))
    # 150 jobs are 15 windows: enough for every process to take part many times and for a mean to mean something;
    # the window is half the documented 1 s example so the test costs ~8 s instead of ~15 s (same invariant).
    await queue.add_bulk([BulkJob("r", {"ms": 5}) for _ in range(150)])
    workers = fleet(url=redis_url, prefix=prefix, concurrency=5, rate=[10, WINDOW_MS])
    procs = [workers.spawn() for _ in range(3)]
    await wait_until(lambda: finished(queue, 150), timeout_s=60, every_s=0.2)
    assert await workers.terminate(procs, timeout_s=20) == [0, 0, 0]
    runs = await recorded_runs(redis_client, queue)
    assert len(runs) == 150, "each job ran once"
    # Counted where the work arrives: each process's processor-entry time on the machine's monotonic clock.
    entered = [float(r["entered_ms"]) for r in runs]
    # A start reaches its processor 0.5-3 ms after Redis let it in on an idle machine (the 5 ms guard band covers
    # that), but tens of ms late on a loaded one: measured here with the load average near 5, 11 starts came within
    # 482-499 ms at the processors. So at the processors the limit is held to within HANDOFF_SLACK_MS: 11 starts
    # never fit in 460 ms. A double burst, an 11th start let into a window, or a window short by more than 40 ms
    # fails this; the guard band itself is pinned on the engine's clock below and by the next tests.
    worst = max_in_window(entered, WINDOW_MS - HANDOFF_SLACK_MS)
    at_window = max_in_window(entered, WINDOW_MS)
    # The engine's clock (the Redis TIME each start was let in at, the clock the limiter keeps): exact, and each
    # start holds its slot for the window plus the 5 ms guard band, so even a 505 ms window never holds 11.
    stamped = [j.processed_ms for j in await queue.get_jobs(JobState.COMPLETED) if j.processed_ms is not None]
    assert len(stamped) == 150
    span_ms = max(entered) - min(entered)
    # After the first burst of 10, each further 10 starts need one more window: the mean over the run.
    mean_per_window = (len(entered) - 10) / span_ms * WINDOW_MS
    print(
        f"\nrate limit: {len(entered)} starts in {span_ms:.0f} ms; at the processors max {worst} per "
        f"{WINDOW_MS - HANDOFF_SLACK_MS} ms, {at_window} per {WINDOW_MS} ms; mean {mean_per_window:.2f}/window"
    )
    assert worst <= 10
    assert max_in_window(stamped, WINDOW_MS + DEFAULT_RATE_MARGIN_MS) <= 10
    # 10 per window less the 5 ms guard band (10 x 500/505 = 9.9); 9.0 leaves room for a loaded machine.
    assert mean_per_window >= 9.0
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
    """At 5 per 500 ms the 6th start reaches the processor no sooner than 500 ms after the 1st, and not much later."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("s", {}) for _ in range(6)])
    starts: list[float] = []

    async def processor(job: Job) -> None:
        starts.append(time.monotonic())

    worker = Worker(queue, processor, concurrency=10, limits=QueueLimits(rate=RateLimit(5, 500)))
    async with running(worker):
        await wait_until(lambda: finished(queue, 6), every_s=0.05)
    gap_ms = (starts[5] - starts[0]) * 1000
    # The documented window, by the processor's clock, with no allowance below it: six starts inside 500 ms at the
    # processor is the failure the guard band exists to prevent. The slot is held 505 ms by Redis's clock.
    assert gap_ms >= 500, gap_ms
    # Not polling late: the worker sleeps exactly until the slot. 150 ms above the 505 covers a timer woken late on
    # a loaded 2-core machine; a worker that polled (every idle_block_s, 5 s) or missed the slot would be far past.
    assert gap_ms <= 505 + 150, gap_ms


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


async def test_the_default_guard_band_holds_each_slot_5_ms_past_the_window(make_queue: QueueFactory) -> None:
    """RateLimit(2, 200) with no margin given: after two starts the wait runs to 200 ms + the 5 ms guard band."""
    queue = make_queue()
    await queue.set_limits(QueueLimits(rate=RateLimit(2, 200)))
    await queue.add_bulk([BulkJob("n", {}) for _ in range(3)])
    first = list(await queue.call("fetch", "w", 30_000, 2))
    assert (len(first) - 2) // 4 == 2
    started_ms = min(Job.from_record(first[i + 1], None).processed_ms or 0 for i in range(2, len(first), 4))
    seconds, micros = await queue.redis.time()
    before_ms = seconds * 1000 + micros // 1000  # on Redis's clock, one round trip before the limited fetch ran
    limited = list(await queue.call("fetch", "w", 30_000, 1))
    assert int(limited[0]) == 2
    # The slot frees `wait` ms after the limited fetch ran, at or after before_ms: without the band it would free
    # at started_ms + 200, so before_ms + wait could not pass it. Counted on Redis's clock, not the test's, so a
    # slow moment between the two fetches does not matter.
    frees_by_ms = before_ms + int(limited[1])
    assert started_ms + 200 < frees_by_ms <= started_ms + 200 + DEFAULT_RATE_MARGIN_MS, (started_ms, frees_by_ms)
    assert DEFAULT_RATE_MARGIN_MS == 5, "the figure docs/architecture.md and docs/operations.md give"
