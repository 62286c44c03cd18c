"""Engine guarantees docs/architecture.md lists that had no test: the global concurrency cap, retention by age, and
`Queue.hold()` called directly. Counts are taken at the processor (what upstream would see), not from the engine."""

from __future__ import annotations

import asyncio

from slack_backend.queue import BulkJob, Job, JobState, KeepJobs, QueueLimits, Worker
from tests.support.engine import QueueFactory, finished, running, wait_until


async def test_global_concurrency_caps_running_jobs_across_workers(make_queue: QueueFactory) -> None:
    """global_concurrency=3 with two workers of 5 slots each: at most 3 processors run at once, and 3 do."""
    queue = make_queue()
    limits = QueueLimits(global_concurrency=3)
    await queue.add_bulk([BulkJob("j", {"n": n}) for n in range(30)])
    inside = 0
    peak = 0

    async def processor(job: Job) -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        try:
            await asyncio.sleep(0.05)
        finally:
            inside -= 1

    first = Worker(queue, processor, concurrency=5, limits=limits)
    second = Worker(queue, processor, concurrency=5, limits=limits)
    async with running(first), running(second):
        await wait_until(lambda: finished(queue, 30), timeout_s=30, every_s=0.05)
    assert peak == 3, f"peak {peak} processors at once under a global cap of 3 (10 slots offered)"


async def test_retention_by_age_drops_finished_jobs_older_than_age_ms(make_queue: QueueFactory) -> None:
    """KeepJobs(age_ms=300): jobs finished well before a later completion are removed; the later one is kept."""
    queue = make_queue()
    old = [(await queue.add("old", {"n": n})).job_id for n in range(3)]

    async def processor(job: Job) -> None:
        return None

    worker = Worker(queue, processor, keep_completed=KeepJobs(age_ms=300))
    async with running(worker):
        await wait_until(lambda: finished(queue, 3), timeout_s=10, every_s=0.02)
        assert set(await queue.job_ids(JobState.COMPLETED)) == set(old), "young enough: all kept"
        # 1 s: more than three times the 300 ms age, so scheduling delays cannot make them look young.
        await asyncio.sleep(1.0)
        new = (await queue.add("new", {})).job_id

        async def new_done() -> bool:
            job = await queue.get(new)
            return job is not None and job.state is JobState.COMPLETED

        await wait_until(new_done, timeout_s=10, every_s=0.02)
    assert await queue.job_ids(JobState.COMPLETED) == [new]
    assert [await queue.get(job_id) for job_id in old] == [None, None, None], "their records are gone too"


async def test_hold_starts_nothing_until_it_ends_and_a_shorter_hold_does_not_cut_it(make_queue: QueueFactory) -> None:
    """Queue.hold(800): no job starts before the hold ends; a later hold(100) leaves the longer one in place."""
    queue = make_queue()
    await queue.hold(800)
    remaining_ms = await queue.hold_remaining_ms()
    assert 0 < remaining_ms <= 800
    hold_until_ms = int(await queue.redis.hget(queue.keys.key("meta"), "hold_until_ms") or 0)
    await queue.hold(100)
    assert int(await queue.redis.hget(queue.keys.key("meta"), "hold_until_ms") or 0) == hold_until_ms
    job_id = (await queue.add("j", {})).job_id
    started_ms: list[int] = []

    async def processor(job: Job) -> None:
        assert job.processed_ms is not None
        started_ms.append(job.processed_ms)

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 1), timeout_s=10, every_s=0.02)
    job = await queue.get(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    # Both times are the Redis clock the hold is defined on: the start came at or after the hold's end.
    assert started_ms[0] >= hold_until_ms
    assert await queue.hold_remaining_ms() == 0
