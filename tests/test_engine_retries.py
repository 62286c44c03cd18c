"""Retries: exponential backoff timing, UnrecoverableError, and RetryAfter without spending an attempt."""

from __future__ import annotations

import itertools
import time

from redis.asyncio import Redis

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import Backoff, Job, JobState, RetryAfter, UnrecoverableError, Worker
from tests.support.engine import QueueFactory, finished, job_in_state, running, wait_until

# How late a timed start may come on a loaded 2-core machine: the worker sleeps to the due time, and a timer or a
# fetch woken 100-200 ms late is common there. Never early is the strict half of each check.
LATE_MS = 250


async def test_failing_job_backs_off_exponentially_then_fails(make_queue: QueueFactory, redis_client: Redis) -> None:
    """An always-failing job runs 4 times, 300, 600, 1200 ms apart (never early), then fails with reason and stack;
    the app's queue doubles from 2 s the same way (2, 4, 8 s: README's JOB_BACKOFF_MS)."""
    queue = make_queue()
    # The same doubling as the app's 2 s base, at 300 ms: the shape is what is tested, not 14 s of waiting.
    added = await queue.add("boom", {}, attempts=4, backoff=Backoff("exponential", 300))
    runs: list[float] = []

    async def processor(job: Job) -> None:
        runs.append(time.monotonic())
        raise RuntimeError(f"upstream broke on try {len(runs)}")

    async with running(Worker(queue, processor)):
        await wait_until(job_in_state(queue, added.job_id, JobState.FAILED), timeout_s=20, every_s=0.05)
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(runs)]
    print(f"\nbackoff gaps ms: {[round(g, 1) for g in gaps_ms]}")
    assert len(runs) == 4
    for gap, expected in zip(gaps_ms, (300, 600, 1200), strict=True):
        assert expected <= gap <= expected + LATE_MS, gaps_ms
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.attempts_made == 4
    assert job.failed_reason == "upstream broke on try 4"
    assert "RuntimeError: upstream broke on try 4" in job.stacktrace[0]
    assert len(job.stacktrace) == 4
    app_queue = ai_responses_queue(redis_client, load_settings({"REDIS_PREFIX": "unused"}))
    assert app_queue.defaults.attempts == 4
    assert [app_queue.defaults.backoff.delay_for(n) for n in (1, 2, 3)] == [2000, 4000, 8000]


async def test_unrecoverable_error_fails_after_one_run(make_queue: QueueFactory) -> None:
    """UnrecoverableError fails the job on its first run, whatever attempts are left."""
    queue = make_queue()
    added = await queue.add("bad", {}, attempts=4)
    runs = 0

    async def processor(job: Job) -> None:
        nonlocal runs
        runs += 1
        raise UnrecoverableError("the input can never work")

    async with running(Worker(queue, processor)):
        await wait_until(job_in_state(queue, added.job_id, JobState.FAILED))
    job = await queue.get(added.job_id)
    assert job is not None
    assert runs == 1
    assert job.attempts_made == 1
    assert job.failed_reason == "the input can never work"


async def test_retry_after_reruns_later_without_spending_an_attempt(make_queue: QueueFactory) -> None:
    """RetryAfter(1) reruns the job 1 s later (never early) and the attempt count stays unchanged."""
    queue = make_queue()
    added = await queue.add("limited", {}, attempts=1)
    runs: list[tuple[float, int]] = []

    async def processor(job: Job) -> str:
        runs.append((time.monotonic(), job.attempts_made))
        if len(runs) == 1:
            raise RetryAfter(1)
        return "done"

    async with running(Worker(queue, processor)):
        await wait_until(job_in_state(queue, added.job_id, JobState.COMPLETED), timeout_s=10, every_s=0.05)
    gap_ms = (runs[1][0] - runs[0][0]) * 1000
    assert 1000 <= gap_ms <= 1000 + LATE_MS, gap_ms
    assert [made for _, made in runs] == [0, 0], "the RetryAfter run spent no attempt"
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.attempts_made == 1
    assert job.result == "done"


async def test_retry_after_with_hold_pauses_the_whole_queue(make_queue: QueueFactory) -> None:
    """RetryAfter(1, hold_queue=True) stops every job of the queue from starting for 1 s."""
    queue = make_queue()
    await queue.add("first", {"n": 0})
    await queue.add("second", {"n": 1})
    starts: list[tuple[int, float]] = []

    async def processor(job: Job) -> None:
        starts.append((job.data["n"], time.monotonic()))
        if len(starts) == 1:
            raise RetryAfter(1, hold_queue=True)

    async with running(Worker(queue, processor, concurrency=1)):
        await wait_until(lambda: finished(queue, 2), timeout_s=10)
    (first_n, held_at), *later = starts
    assert first_n == 0
    assert sorted(n for n, _ in later) == [0, 1]
    assert all(t - held_at >= 0.95 for _, t in later), "no job started while the queue was held"
    assert await queue.hold_remaining_ms() == 0
