"""Clock faults: a worker frozen (SIGSTOP) past its lease cannot overwrite the state written by the job's new owner."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.asyncio import Redis

from slack_backend.queue import JobState
from tests.support.engine import QueueFactory, job_in_state, wait_until
from tests.support.fleet import FleetFactory, now_ms
from tests.support.procs import recorded_runs

LEASE_MS = 1000
STALLED_MS = 200
JOB_MS = 3000


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("resume", ["while_new_owner_runs", "after_new_owner_finished"])
async def test_a_worker_paused_past_its_lease_cannot_overwrite_the_new_owners_result(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, fleet: FleetFactory, resume: str
) -> None:
    """SIGSTOP the owner past its lease, another worker takes the job over; after SIGCONT the old finish is refused."""
    queue = make_queue()
    added = await queue.add("slow", {"ms": JOB_MS})
    workers = fleet(url=redis_url, prefix=prefix, lease_ms=LEASE_MS, stalled_ms=STALLED_MS, result_worker=True)
    old = workers.spawn(concurrency=1)
    await wait_until(job_in_state(queue, added.job_id, JobState.ACTIVE), timeout_s=20)

    async def running_in_processor() -> bool:
        return bool(await redis_client.exists(f"{queue.keys.tag}:test:marker:{added.job_id}"))

    # Frozen mid-run (inside the processor), not between the fetch and the processor's start.
    await wait_until(running_in_processor, timeout_s=10)
    first = await queue.get(added.job_id)
    assert first is not None
    old_owner = first.worker
    assert old_owner is not None
    old.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # The new owner runs the job for 4 s: it still holds the job when the old one's 3 s run ends.
        new = workers.spawn(concurrency=1, job_ms=4000)

        async def taken_over() -> bool:
            job = await queue.get(added.job_id)
            return job is not None and job.state is JobState.ACTIVE and job.worker != old_owner

        await wait_until(taken_over, timeout_s=20)
        taken_after_s = time.monotonic() - stopped
        # Frozen for 1.5 leases at least (the scenario's length, not a wait for a condition).
        await asyncio.sleep(max(0.0, stopped + 1.5 * LEASE_MS / 1000 - time.monotonic()))
        if resume == "after_new_owner_finished":
            await wait_until(job_in_state(queue, added.job_id, JobState.COMPLETED), timeout_s=20)
    finally:
        old.send_signal(signal.SIGCONT)
    continued_ms = now_ms()
    paused_s = time.monotonic() - stopped  # at least 1.5 leases by construction: printed, not asserted

    async def old_refused() -> bool:
        return "lease lost; result discarded" in workers.log_text(old)

    await wait_until(old_refused, timeout_s=10, every_s=0.05)
    at_refusal = await queue.get(added.job_id)
    assert at_refusal is not None
    if resume == "while_new_owner_runs":
        assert at_refusal.state is JobState.ACTIVE, "the refused finish left the new owner's run alone"
    assert at_refusal.worker != old_owner
    await wait_until(job_in_state(queue, added.job_id, JobState.COMPLETED), timeout_s=20)
    await workers.wait_ready(queue, [old, new])
    assert await workers.terminate([old, new]) == [0, 0]

    job = await queue.get(added.job_id)
    assert job is not None
    runs = await recorded_runs(redis_client, queue)
    by_worker = {str(r["worker"]): r for r in runs}
    assert set(by_worker) == {old_owner, str(job.worker)}, "each owner recorded exactly its one run"
    old_run, new_run = by_worker[old_owner], by_worker[str(job.worker)]
    # Once continued, the old owner's renewal sees the lost lease and cancels its run; it may run on for a moment.
    both_end = min(old_run["end_ms"], new_run["end_ms"])
    zombie_ms = max(0, both_end - max(continued_ms, new_run["start_ms"]))
    by = "new" if job.result.get("worker") == job.worker else "old"
    old_log = workers.log_text(old)
    refusals = old_log.count("lease lost; result discarded")
    lost_while_running = old_log.count("lease lost while running")
    print(
        f"\nlease pause ({resume}): old owner frozen {paused_s:.1f} s (lease {LEASE_MS} ms), job taken over after "
        f"{taken_after_s:.1f} s; old owner's finish refused {refusals}x (its renewal saw the loss "
        f"{lost_while_running}x); final result by {by} owner; once continued, the stale run went on {zombie_ms} ms "
        f"beside the new one"
    )
    assert refusals == 1
    if resume == "while_new_owner_runs":
        # Only here can the two runs overlap: the old run had ~1.5 s of its 3 s sleep left when continued, so an
        # end within 500 ms means its renewal cancelled it. (In the other case the new run had already ended.)
        assert new_run["end_ms"] > continued_ms, "the new owner was still running when the old one continued"
        assert zombie_ms <= 500, "the old owner stops its stale run once its renewal sees the loss"
    assert job.state is JobState.COMPLETED
    assert job.worker is not None
    assert job.worker != old_owner
    assert job.result == {"ok": True, "worker": job.worker}, "the result is the new owner's"
    assert job.stalls == 1
    assert job.attempts_made == 1, "the old owner's finish counted for nothing"
    assert new_run["end_ms"] - new_run["start_ms"] >= 4000 - 50, "the new owner ran it to the end (4 s job)"
