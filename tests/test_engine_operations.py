"""Operating a queue: bulk retry, paged clean, remove, drain, pause and resume, group bookkeeping."""

from __future__ import annotations

import asyncio
import time

import pytest

from slack_backend.queue import BulkJob, Job, JobOptions, JobState, JobStateError, Queue, Worker
from tests.support.engine import QueueFactory, finished, running, wait_until


async def _fail_all(queue: Queue, n: int) -> list[str]:
    """Take n jobs with a bare fetch and fail each for good, through the real scripts."""
    reply = await queue.call("fetch", "w", 30_000, n)
    ids = []
    for i in range(2, len(reply), 4):
        job_id, token = str(reply[i]), str(reply[i + 3])
        await queue.call("fail", job_id, token, "boom", "", -1, -1, 0, 1000, 10)
        ids.append(job_id)
    return ids


async def test_retry_many_resets_attempts_and_skips_others(make_queue: QueueFactory) -> None:
    """retry_many sends failed jobs back to waiting with attempts reset; unknown and waiting ids are skipped."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {}) for _ in range(30)])
    failed = await _fail_all(queue, 30)
    waiting = await queue.add("other", {})
    retried = await queue.retry_many([*failed, "no-such-job", waiting.job_id])
    assert retried == 30
    counts = await queue.counts()
    assert counts[JobState.WAITING] == 31
    assert counts[JobState.FAILED] == 0
    assert all(j.attempts_made == 0 for j in await queue.get_jobs(JobState.WAITING))
    with pytest.raises(JobStateError, match="only failed or completed"):
        await queue.retry(waiting.job_id)


async def test_clean_waiting_pages_through_more_than_one_batch(make_queue: QueueFactory) -> None:
    """Cleaning waiting jobs older than a cutoff takes exactly the old ones, across several atomic batches."""
    queue = make_queue()
    old = await queue.add_bulk([BulkJob("j", {}, JobOptions(group=f"g{i % 7}")) for i in range(1500)])
    await asyncio.sleep(0.1)
    between_s = time.time()
    await asyncio.sleep(0.1)
    new = await queue.add_bulk([BulkJob("j", {}, JobOptions(group=f"g{i % 7}")) for i in range(1000)])
    progress: list[int] = []
    # The cutoff is the moment between the two adds, however long the second add took on a loaded machine (a fixed
    # older_than_ms would need the 1,000 new jobs to be younger than it when clean starts).
    older_than_ms = int((time.time() - between_s) * 1000)
    removed = await queue.clean(JobState.WAITING, older_than_ms=older_than_ms, on_progress=progress.append)
    assert removed == 1500
    assert len(progress) >= 2
    assert set(await queue.job_ids(JobState.WAITING)) == {a.job_id for a in new}
    assert not set(await queue.redis.hkeys(queue.keys.key("jobs"))) & {a.job_id for a in old}
    groups = await queue.groups()
    assert sum(g.waiting for g in groups) == 1000


async def test_remove_refuses_a_running_job_and_removes_others(make_queue: QueueFactory) -> None:
    """A running job cannot be removed; a waiting one can, and leaves no trace."""
    queue = make_queue()
    running_job = await queue.add("a", {})
    waiting_job = await queue.add("b", {})
    await queue.call("fetch", "w", 30_000, 1)
    with pytest.raises(JobStateError, match="running"):
        await queue.remove(running_job.job_id)
    await queue.remove(waiting_job.job_id)
    assert await queue.get(waiting_job.job_id) is None
    assert (await queue.counts())[JobState.WAITING] == 0


async def test_pause_stops_starts_and_resume_restarts_them(make_queue: QueueFactory) -> None:
    """While paused no job starts; resume wakes idle workers at once."""
    queue = make_queue()
    started: list[str] = []

    async def processor(job: Job) -> None:
        started.append(job.id)

    async with running(Worker(queue, processor)):
        await queue.pause()
        await queue.add("j", {})
        await asyncio.sleep(0.3)
        assert started == []
        await queue.resume()
        await wait_until(lambda: finished(queue, 1), timeout_s=2)
    assert len(started) == 1


async def test_drain_removes_waiting_and_optionally_delayed(make_queue: QueueFactory) -> None:
    """drain deletes waiting jobs (and delayed ones when asked) with their group bookkeeping."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {}, JobOptions(group="g")) for _ in range(2100)])
    await queue.add("later", {}, delay_ms=60_000)
    assert await queue.drain() == 2100
    assert (await queue.counts())[JobState.DELAYED] == 1
    assert await queue.groups() == []
    assert await queue.drain(include_delayed=True) == 1
    assert sum((await queue.counts()).values()) == 0
