"""Survival: Redis restarts under running workers, corrupt job data, and a soak with random failures."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from redis.exceptions import RedisError

from slack_backend.queue import Backoff, BulkJob, Job, JobOptions, JobState, KeepJobs, Queue, Worker, create_redis
from tests.support.engine import QueueFactory, finished, job_in_state, running, wait_until
from tests.support.procs import recorded_runs, spawn_worker
from tests.support.redis_server import RedisServer


async def test_redis_restart_with_aof_loses_no_job(tmp_path: Path) -> None:
    """Redis restarted (AOF on) while a worker runs: the worker reconnects by itself and every acknowledged job runs."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    client = create_redis(server.url)
    queue = Queue("q", connection=client, prefix="restart")
    done: set[str] = set()

    async def processor(job: Job) -> None:
        await asyncio.sleep(0.005)
        done.add(job.id)

    acknowledged: list[str] = []

    async def produce(n: int) -> None:
        for i in range(n):
            job_id = f"job-{i}"
            while True:
                try:
                    await queue.add("j", {"i": i}, job_id=job_id)
                    acknowledged.append(job_id)
                    break
                except RedisError:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.01)

    try:
        async with running(Worker(queue, processor, keep_completed=KeepJobs(None))):
            producer = asyncio.create_task(produce(200))
            await asyncio.sleep(0.8)
            await asyncio.to_thread(server.restart)
            await producer
            await wait_until(lambda: finished(queue, 200), timeout_s=30, every_s=0.1)
        assert len(acknowledged) == 200
        completed = set(await queue.job_ids(JobState.COMPLETED))
        assert completed == set(acknowledged)
        assert done >= set(acknowledged)
    finally:
        await client.aclose()
        server.stop()


async def test_corrupt_job_data_fails_that_job_at_once_and_the_worker_goes_on(make_queue: QueueFactory) -> None:
    """A job whose stored data is not JSON fails on its first run with the reason; the next job still completes."""
    queue = make_queue()
    broken = await queue.add("j", {"ok": 1}, attempts=4)
    await queue.redis.hset(queue.keys.key("data"), broken.job_id, "{not json")
    good = await queue.add("j", {"ok": 2})

    async def processor(job: Job) -> int:
        return int(job.data["ok"])

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 2))
        await wait_until(job_in_state(queue, good.job_id, JobState.COMPLETED))
    job = await queue.get(broken.job_id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.attempts_made == 1
    assert job.failed_reason is not None
    assert job.failed_reason.startswith("job data is not valid JSON")


async def test_soak_2000_jobs_with_random_failures(
    make_queue: QueueFactory, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """2,000 jobs, 30% random failures, 2 processes: each ends completed or failed; none lost or run twice at once."""
    queue = make_queue()
    opts = JobOptions(attempts=3, backoff=Backoff("fixed", 20))
    added = await queue.add_bulk([BulkJob("s", {"ms": 2}, opts) for _ in range(2000)])
    cfg = {"url": redis_url, "prefix": prefix, "concurrency": 10, "fail_rate": 0.3}
    procs = [spawn_worker(cfg, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        # Well inside pytest's 120 s per-test timeout, so a stuck run fails with this wait's message (8 s measured).
        await wait_until(lambda: finished(queue, 2000), timeout_s=80, every_s=0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert await asyncio.to_thread(p.wait, 20) == 0
    counts = await queue.counts()
    ids = {a.job_id for a in added}
    ended = set(await queue.job_ids(JobState.COMPLETED)) | set(await queue.job_ids(JobState.FAILED))
    assert ended == ids
    assert counts[JobState.ACTIVE] == counts[JobState.WAITING] == counts[JobState.DELAYED] == 0
    runs = await recorded_runs(queue.redis, queue)
    assert not any(r["overlap"] for r in runs)
    per_job: dict[str, int] = {}
    for r in runs:
        per_job[r["id"]] = per_job.get(r["id"], 0) + 1
    jobs = {j.id: j for j in await queue.get_many(sorted(ids))}
    assert all(per_job[i] == jobs[i].attempts_made for i in ids), "each run is one counted attempt"
    print(f"\nsoak: {counts[JobState.COMPLETED]} completed, {counts[JobState.FAILED]} failed, {len(runs)} runs")
