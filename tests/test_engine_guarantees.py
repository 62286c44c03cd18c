"""Engine guarantees docs/architecture.md lists that had no test: the global concurrency cap, retention by age,
`Queue.hold()` called directly, and the release of jobs a fetch returns after close began. Counts are taken at the
processor (what upstream would see), not from the engine."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from slack_backend.queue import BulkJob, Job, JobState, KeepJobs, Queue, QueueLimits, Worker
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


class _LateFetchQueue(Queue):
    """A queue whose first fetch runs in Redis at once but whose reply reaches the worker only on `deliver`."""

    def __init__(self, name: str, *, connection: Redis, prefix: str) -> None:
        super().__init__(name, connection=connection, prefix=prefix)
        self.fetched = asyncio.Event()
        self.deliver = asyncio.Event()

    async def call(self, script: str, *args: str | int | float) -> Any:
        reply = await super().call(script, *args)
        if script == "fetch" and not self.fetched.is_set():
            self.fetched.set()
            await self.deliver.wait()
        return reply


async def test_jobs_a_fetch_returns_after_close_began_are_released_to_the_head_of_their_group(
    redis_client: Redis, prefix: str
) -> None:
    """A fetch that returns once close() began: its jobs never run, go back unspent, ahead of their group's rest."""
    queue = _LateFetchQueue("q", connection=redis_client, prefix=prefix)
    for job_id in ("first", "second", "third"):
        await queue.add("j", {}, job_id=job_id, group="g")
    ran: list[str] = []

    async def processor(job: Job) -> None:
        ran.append(job.id)

    worker = Worker(queue, processor, concurrency=2)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(queue.fetched.wait(), 10)
    assert (await queue.counts())[JobState.ACTIVE] == 2, "the fetch leased first and second in Redis"
    closing = asyncio.create_task(worker.close(5))
    await asyncio.sleep(0)  # close() sets its flag before its first await
    queue.deliver.set()
    await asyncio.wait_for(closing, 10)
    await run
    assert ran == [], "nothing fetched after close began was started"
    assert worker.stats.released == 2
    jobs = await queue.get_many(["first", "second", "third"])
    assert [(j.state, j.attempts_made) if j else None for j in jobs] == [(JobState.WAITING, 0)] * 3
    # At the head of their group: a tail release would put them behind `third`, which waited meanwhile.
    async with running(Worker(Queue("q", connection=redis_client, prefix=prefix), processor, concurrency=1)):
        await wait_until(lambda: finished(queue, 3), every_s=0.05)
    assert ran == ["first", "second", "third"]
