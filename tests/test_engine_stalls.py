"""Leases and stalls: a killed worker's jobs are recovered in time, and a lost lease cannot finish a job."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from slack_backend.queue import Job, JobState, LeaseLostError, Worker
from slack_backend.queue.errors import raise_for_code
from tests.support.engine import QueueFactory, finished, running, wait_until
from tests.support.procs import recorded_runs, spawn_worker

LEASE_MS = 1000
CHECK_MS = 500


async def test_killed_workers_jobs_are_finished_by_another_within_lease_plus_interval(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """SIGKILL a worker holding 3 jobs: another worker restarts them within lease + check interval and finishes them."""
    queue = make_queue()
    for _ in range(3):
        await queue.add("slow", {"ms": 60_000})
    base = {"url": redis_url, "prefix": prefix, "lease_ms": LEASE_MS, "stalled_ms": CHECK_MS}
    victim = spawn_worker({**base, "concurrency": 3}, tmp_path / "victim.log")

    async def three_active() -> bool:
        return (await queue.counts())[JobState.ACTIVE] == 3

    await wait_until(three_active, timeout_s=15)
    rescuer = spawn_worker({**base, "concurrency": 3, "job_ms": 10}, tmp_path / "rescuer.log")
    await asyncio.sleep(0.5)  # the rescuer is up and idle
    seconds, micros = await redis_client.time()
    killed_ms = seconds * 1000 + micros // 1000
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=5)
    try:
        await wait_until(lambda: finished(queue, 3), timeout_s=10)
    finally:
        rescuer.send_signal(signal.SIGTERM)
        assert rescuer.wait(timeout=10) == 0
    jobs = await queue.get_jobs(JobState.COMPLETED)
    assert len(jobs) == 3
    restart_ms = [j.processed_ms - killed_ms for j in jobs if j.processed_ms is not None]
    print(f"\nrecovered after (ms): {restart_ms}")
    assert all(0 < ms <= LEASE_MS + CHECK_MS + 150 for ms in restart_ms), restart_ms
    assert all(j.stalls == 1 for j in jobs)
    runs = await recorded_runs(redis_client, queue)
    assert not any(r["overlap"] for r in runs)


async def test_a_worker_whose_lease_expired_cannot_complete_or_fail(make_queue: QueueFactory) -> None:
    """After a lease expires and the job is recovered, the old owner's complete and fail are rejected."""
    queue = make_queue()
    added = await queue.add("j", {})
    reply = await queue.call("fetch", "old-owner", 200, 1)
    old_token = str(reply[5])
    await asyncio.sleep(0.3)
    recovered = await queue.call("stalled", 1, -1, 0, 1000)
    assert list(recovered) == [added.job_id, "waiting", "", ""]
    new = await queue.call("fetch", "new-owner", 30_000, 1)
    new_token = str(new[5])
    with pytest.raises(LeaseLostError):
        raise_for_code(
            int((await queue.call("complete", -1, 0, 1000, "", 0, 0, "", added.job_id, old_token, '"late"', -1))[1]),
            "x",
        )
    fail_reply = await queue.call("fail", added.job_id, old_token, "late", "", -1, -1, 0, 1000, 10)
    with pytest.raises(LeaseLostError):
        raise_for_code(int(fail_reply[0]), "x")
    assert int((await queue.call("complete", -1, 0, 1000, "", 0, 0, "", added.job_id, new_token, '"mine"', -1))[1]) == 0
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result == "mine"


async def test_worker_renews_leases_of_long_jobs(make_queue: QueueFactory) -> None:
    """A job running 4x longer than the lease is not recovered as stalled while its worker is alive."""
    queue = make_queue()
    added = await queue.add("long", {})

    async def processor(job: Job) -> str:
        await asyncio.sleep(1.2)
        return "ok"

    stalled: list[str] = []
    worker = Worker(queue, processor, lease_ms=300, stalled_interval_ms=100)
    worker.on("stalled", lambda e: stalled.append(e.job_id or ""))
    async with running(worker):
        await wait_until(lambda: finished(queue, 1), timeout_s=5)
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.stalls == 0
    assert stalled == []
