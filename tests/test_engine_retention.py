"""Retention: the newest 100 completed and 500 failed are kept, and nothing else of the removed jobs."""

from __future__ import annotations

from slack_backend.queue import BulkJob, Job, JobOptions, JobState, KeepJobs, Queue, UnrecoverableError, Worker
from tests.support.engine import QueueFactory, running, wait_until


async def test_keeps_last_100_completed_and_500_failed_without_orphans(make_queue: QueueFactory) -> None:
    """After 300 completed and 600 failed, exactly 100 and 500 remain and no job hash entry is orphaned."""
    queue = make_queue()
    ok = [BulkJob("ok", {"fail": False}) for _ in range(300)]
    bad = [BulkJob("bad", {"fail": True}, JobOptions(attempts=1)) for _ in range(600)]
    await queue.add_bulk(ok + bad)
    seen = 0

    async def processor(job: Job) -> None:
        nonlocal seen
        seen += 1
        if job.data["fail"]:
            raise UnrecoverableError("planned failure")

    worker = Worker(queue, processor, concurrency=20, keep_completed=KeepJobs(100), keep_failed=KeepJobs(500))

    async def all_ran() -> bool:
        c = await queue.counts()
        return seen == 900 and c[JobState.ACTIVE] == 0 and c[JobState.WAITING] == 0

    async with running(worker):
        await wait_until(all_ran, timeout_s=60)
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 100
    assert counts[JobState.FAILED] == 500
    redis = queue.redis
    kept = set(await queue.job_ids(JobState.COMPLETED)) | set(await queue.job_ids(JobState.FAILED))
    assert set(await redis.hkeys(queue.keys.key("jobs"))) == kept
    assert set(await redis.hkeys(queue.keys.key("data"))) == kept
    assert all(j.state is not JobState.ACTIVE for j in await queue.get_many(list(kept))), "no run holds a lease"
    # The newest are the ones kept: five more completions push out exactly the five oldest kept ones.
    before = await queue.get_many(await queue.job_ids(JobState.COMPLETED))
    by_age = sorted(before, key=lambda j: (j.finished_ms or 0, j.id))
    added = [(await queue.add("ok", {"fail": False})).job_id for _ in range(5)]
    # One slot: the five finish after every kept job, in order, so "newest" is unambiguous.
    async with running(Worker(queue, processor, concurrency=1, keep_completed=KeepJobs(100))):
        await wait_until(lambda: _all_completed(queue, added), timeout_s=30)
    after = set(await queue.job_ids(JobState.COMPLETED))
    assert after == {j.id for j in by_age[5:]} | set(added)
    assert not after & {j.id for j in by_age[:5]}, "the oldest five were dropped"


async def _all_completed(queue: Queue, ids: list[str]) -> bool:
    return all(j is not None and j.state is JobState.COMPLETED for j in await queue.get_many(ids))
