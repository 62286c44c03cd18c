"""Batched starts and completions: jobs that start or finish together share one script call, and nothing is lost."""

from __future__ import annotations

import asyncio
import json
import time

from slack_backend.queue import BulkJob, Job, JobOptions, JobState, KeepJobs, Queue, Worker
from slack_backend.queue.limits import GroupSettings, QueueLimits, RateLimit
from slack_backend.web._dashboard_data import minute_series
from tests.support.engine import QueueFactory, finished, running, wait_until


async def test_one_fetch_starts_a_block_and_one_call_completes_many(make_queue: QueueFactory) -> None:
    """A fetch of 50 starts 50 jobs; their completions go in one call, each job kept with its own result."""
    queue = make_queue()
    added = await queue.add_bulk([BulkJob("n", {"i": i}) for i in range(50)])
    reply = list(await queue.call("fetch", "w", 30_000, 50))
    assert int(reply[0]) == 0
    flat = reply[2:]
    ids = [str(flat[i]) for i in range(0, len(flat), 4)]
    tokens = [str(flat[i + 3]) for i in range(0, len(flat), 4)]
    assert ids == [a.job_id for a in added], "one group's block starts in its waiting order"
    assert len(set(tokens)) == 50
    args: list[str | int] = [-1, 0, 1000, "", 0, 0, ""]
    for job_id, token in zip(ids, tokens, strict=True):
        args += [job_id, token, json.dumps({"done": job_id}), -1]
    # A repeated id in one call is refused: a job finishes once.
    args += [ids[0], tokens[0], "null", -1]
    codes = [int(c) for c in (await queue.call("complete", *args))[1:]]
    assert codes == [0] * 50 + [-2]
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 50
    assert counts[JobState.ACTIVE] == 0
    jobs = await queue.get_many(ids)
    assert [j.result for j in jobs] == [{"done": i} for i in ids]
    assert all(j.state is JobState.COMPLETED for j in jobs), "no run holds a lease"
    assert await queue.redis.hlen(queue.keys.key("group_active")) == 0


async def test_a_block_never_jumps_the_fair_order(make_queue: QueueFactory) -> None:
    """With two groups waiting, one fetch of 20 alternates between them rather than taking one group's block."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("n", {}, options=_in("a")) for _ in range(20)])
    await queue.add_bulk([BulkJob("n", {}, options=_in("b")) for _ in range(20)])
    reply = list(await queue.call("fetch", "w", 30_000, 20))
    groups = [json.loads(str(reply[2 + i + 1]))["group"] for i in range(0, len(reply) - 2, 4)]
    assert len(groups) == 20
    assert groups.count("a") == groups.count("b") == 10
    assert all(groups[i] != groups[i + 1] for i in range(len(groups) - 1)), groups


async def test_a_block_respects_the_rate_limit_and_a_group_cap(make_queue: QueueFactory) -> None:
    """A fetch asking for 50 starts no more than the limiter's free slots, nor more than a group's cap."""
    queue = make_queue()
    await queue.set_limits(QueueLimits(rate=RateLimit(7, 60_000)))
    await queue.add_bulk([BulkJob("n", {}) for _ in range(20)])
    reply = list(await queue.call("fetch", "w", 30_000, 50))
    assert (len(reply) - 2) // 4 == 7
    again = list(await queue.call("fetch", "w", 30_000, 50))
    assert int(again[0]) == 2, "rate limited: the window holds 7 starts"
    capped = make_queue("capped")
    await capped.set_group("g", GroupSettings(concurrency=3))
    await capped.add_bulk([BulkJob("n", {}, options=_in("g")) for _ in range(20)])
    reply = list(await capped.call("fetch", "w", 30_000, 50))
    assert (len(reply) - 2) // 4 == 3


async def test_batched_completions_lose_nothing_and_report_every_job(make_queue: QueueFactory) -> None:
    """500 jobs at concurrency 20: every job completes once, and the events count all 500 for the dashboard."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("n", {"i": i}) for i in range(500)])
    runs: dict[int, int] = {}

    async def processor(job: Job) -> int:
        runs[job.data["i"]] = runs.get(job.data["i"], 0) + 1
        await asyncio.sleep(0)
        return int(job.data["i"])

    async with running(Worker(queue, processor, concurrency=20, keep_completed=KeepJobs())):
        await wait_until(lambda: finished(queue, 500), timeout_s=30)
    assert sorted(runs) == list(range(500))
    assert set(runs.values()) == {1}
    events = [e for e in await queue.events(1000) if e["event"] == "completed"]
    reported = [job_id for e in events for job_id in json.loads(e["job_ids"])]
    assert len(reported) == len(set(reported)) == 500
    assert len(events) < 500, "completions that land together share an entry"
    buckets = minute_series(events, int(time.time() * 1000))
    assert sum(b.completed for b in buckets) == 500


def _in(group: str) -> JobOptions:
    return JobOptions(group=group)


async def test_the_event_stream_holds_about_max_events_jobs_not_entries(make_queue: QueueFactory) -> None:
    """20,000 jobs at concurrency 50 with max_events 10,000: the stream keeps at most about 1.5x that many jobs.

    Batched entries carry up to a batch of jobs each; capped by entries alone, the stream would keep all 20,000.
    (max_events cannot shrink with the test: a cap is at least 100 entries, so it must be well above 100 batches.)
    """
    base = make_queue()
    queue = Queue(base.name, connection=base.redis, prefix=base.keys.prefix, max_events=10_000)
    for _ in range(4):
        await queue.add_bulk([BulkJob("n", {}) for _n in range(5_000)])

    async def noop(job: Job) -> None:
        return None

    worker = Worker(queue, noop, concurrency=50)
    async with running(worker):
        await wait_until(lambda: _drained(queue), timeout_s=90)
    assert worker.stats.completed == 20_000
    entries = [e for e in await queue.events(100_000) if e["event"] == "completed"]
    kept = sum(len(json.loads(e["job_ids"])) for e in entries)
    assert 0 < kept <= 15_000, kept


async def _drained(queue: Queue) -> bool:
    counts = await queue.counts()
    return counts[JobState.WAITING] + counts[JobState.ACTIVE] == 0
