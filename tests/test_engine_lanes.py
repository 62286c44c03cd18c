"""Two finishing calls in flight: Redis runs one batch of completions (and the next jobs' start) while the worker
runs the jobs the other started. Counted where the calls travel, at a proxy between the worker and Redis."""

from __future__ import annotations

import asyncio
import hashlib

from slack_backend.queue import BulkJob, Job, JobOptions, JobState, Queue, Worker, create_redis
from slack_backend.queue._scripts import script_source
from tests.support.engine import QueueFactory, grown_past, running, wait_until
from tests.support.fault_proxy import FaultProxy, evalsha_of
from tests.support.redis_server import RedisServer

JOBS = 2_000


async def test_two_finishing_calls_are_in_flight_at_once_and_the_concurrency_holds(
    redis_server: RedisServer, prefix: str
) -> None:
    """A backlog at concurrency 10: the proxy sees two `complete` calls awaiting replies at once, never three; no
    more than 10 jobs in the processor at once; every job runs once."""
    complete_sha = hashlib.sha1(script_source("complete").encode()).hexdigest()
    async with FaultProxy("127.0.0.1", redis_server.port) as proxy:
        client = create_redis(proxy.url)
        queue = Queue("q", connection=client, prefix=prefix)
        added = await queue.add_bulk([BulkJob("n", {"i": i}) for i in range(JOBS)])
        proxy.count_in_flight(evalsha_of(complete_sha))
        started: list[str] = []
        in_processor = 0
        most_in_processor = 0

        async def process(job: Job) -> None:
            nonlocal in_processor, most_in_processor
            started.append(job.id)
            in_processor += 1
            most_in_processor = max(most_in_processor, in_processor)
            await asyncio.sleep(0)
            in_processor -= 1

        worker = Worker(queue, process, concurrency=10)
        completed: list[str] = []
        worker.on("completed", lambda event: completed.append(event.job.id if event.job else ""))
        async with running(worker):
            await wait_until(grown_past(completed, JOBS - 1), timeout_s=60)
        await client.aclose()
    assert proxy.max_in_flight == 2
    assert most_in_processor <= 10
    assert sorted(started) == sorted(completed) == sorted(a.job_id for a in added)


async def test_each_lane_replays_its_own_lost_fetch(make_queue: QueueFactory) -> None:
    """Lane 1 names itself in its request ids: a fetch re-sent on lane 0 after lane 1 fetched gets lane 0's jobs
    back (and lane 1 its own), leasing nothing more; a stale id is stale only on its own lane."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("n", {}, options=JobOptions(job_id=f"j{i}")) for i in range(5)])
    lane0 = list(await queue.call("fetch", "w", 30_000, 2, f"{1:016d}"))
    lane1 = list(await queue.call("fetch", "w", 30_000, 2, f"1:{2:016d}"))
    assert (lane0[2::4], lane1[2::4]) == (["j0", "j1"], ["j2", "j3"])
    again0 = list(await queue.call("fetch", "w", 30_000, 2, f"{1:016d}"))
    again1 = list(await queue.call("fetch", "w", 30_000, 2, f"1:{2:016d}"))
    assert (again0[2::4], again0[5::4]) == (lane0[2::4], lane0[5::4]), "same jobs, same lease tokens"
    assert (again1[2::4], again1[5::4]) == (lane1[2::4], lane1[5::4])
    counts = await queue.counts()
    assert (counts[JobState.ACTIVE], counts[JobState.WAITING]) == (4, 1)
    assert list(await queue.call("fetch", "w", 30_000, 2, f"1:{1:016d}")) == [1, -1], "older than lane 1's last"
    assert list(await queue.call("fetch", "w", 30_000, 2, f"{3:016d}"))[2::4] == ["j4"]


async def test_a_completion_re_sent_after_retention_trimmed_its_job_answers_as_the_first_did(
    make_queue: QueueFactory,
) -> None:
    """A `complete` that fetched on a lane, kept nothing (so its job's record went at once, as a busy queue's
    retention does while a lost reply is re-sent), sent again: it answers 0 for the job, not "not found", and gives
    back the same next job rather than leasing another."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("n", {}, options=JobOptions(job_id=f"j{i}")) for i in range(3)])
    first = list(await queue.call("fetch", "w", 30_000, 1, f"{1:016d}"))
    assert first[2::4] == ["j0"]
    call: list[str | int] = [0, 0, 1000, "w", 30_000, 1, f"1:{2:016d}", "j0", str(first[5]), "null", -1]
    reply = list(await queue.call("complete", *call))
    assert (int(reply[1]), reply[4::4]) == (0, ["j1"])
    assert await queue.get("j0") is None, "retention kept nothing"
    again = list(await queue.call("complete", *call))
    assert int(again[1]) == 0
    assert (again[4::4], again[7::4]) == (reply[4::4], reply[7::4]), "the same next job, the same lease token"
    counts = await queue.counts()
    assert (counts[JobState.ACTIVE], counts[JobState.WAITING]) == (1, 1)
