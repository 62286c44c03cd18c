"""Leases and stalls: a killed worker's jobs are recovered in time, and a lost lease cannot finish a job."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from slack_backend.queue import Job, JobState, LeaseLostError, Worker
from slack_backend.queue.errors import raise_for_code
from tests.support.engine import QueueFactory, finished, running, wait_until
from tests.support.fleet import FleetFactory
from tests.support.procs import recorded_runs

LEASE_MS = 1000
# Checked often enough that a recovery running early by more than one interval is always seen.
CHECK_MS = 200


async def test_killed_workers_jobs_are_finished_by_another_within_lease_plus_interval(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, fleet: FleetFactory
) -> None:
    """SIGKILL a worker holding 3 jobs: another restarts each after its lease ran out, within one check interval."""
    queue = make_queue()
    ids = [(await queue.add("slow", {"ms": 60_000})).job_id for _ in range(3)]
    workers = fleet(url=redis_url, prefix=prefix, lease_ms=LEASE_MS, stalled_ms=CHECK_MS, concurrency=3)
    victim = workers.spawn()

    async def three_active() -> bool:
        return (await queue.counts())[JobState.ACTIVE] == 3

    await wait_until(three_active, timeout_s=15)
    rescuer = workers.spawn(job_ms=10)
    await workers.wait_ready(queue, [rescuer])  # its heartbeat is in: it fetches and checks for stalls from now on
    await workers.kill(victim)
    # The victim is dead, so these lease deadlines (the `active` scores) are final: when each job became stalled.
    expired_ms = {i: await redis_client.zscore(queue.keys.key("active"), i) for i in ids}
    assert all(v is not None for v in expired_ms.values()), expired_ms
    await wait_until(lambda: finished(queue, 3), timeout_s=10, every_s=0.05)
    assert await workers.terminate([rescuer], timeout_s=10) == [0]
    jobs = await queue.get_many(ids)
    assert [j.state if j else None for j in jobs] == [JobState.COMPLETED] * 3
    assert all(j is not None and j.stalls == 1 for j in jobs)
    # Only the rescuer's runs are recorded (a SIGKILLed run writes nothing): each job ran to its end once, there.
    runs = await recorded_runs(redis_client, queue)
    assert sorted(r["id"] for r in runs) == sorted(ids)
    # Measured where the job restarts: the rescuer's processor entry (wall clock, the machine clock Redis TIME
    # reads), against the lease deadline the victim left.
    restart_ms = {r["id"]: r["start_ms"] - float(expired_ms[r["id"]] or 0) for r in runs}
    print(f"\nrestarted after the lease ran out (ms): {sorted(restart_ms.values())}")
    # Never before the lease ran out: an early restart is two owners at once. 2 ms for the ms rounding of the two
    # stamps (the processor's int(time.time() * 1000), the lease deadline's Redis TIME).
    assert all(ms >= -2 for ms in restart_ms.values()), restart_ms
    # Within one stall-check interval of it. 400 ms on top covers a fetch woken late on a loaded 2-core machine;
    # a rescuer that missed checks would be whole further intervals late.
    assert all(ms <= CHECK_MS + 400 for ms in restart_ms.values()), restart_ms


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
