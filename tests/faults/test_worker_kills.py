"""Worker crashes: 10,000 jobs while one of three worker processes is SIGKILLed every 2 s and restarted."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from redis.asyncio import Redis

from slack_backend.queue import BulkJob, JobState
from tests.support.engine import QueueFactory, finished, wait_until
from tests.support.fleet import FleetFactory
from tests.support.procs import recorded_runs

JOBS = 10_000
PROCESSES = 3
KILL_EVERY_S = 2.0
LEASE_MS = 1000
# A run lasts at most 50 ms: a marker living 800 ms covers every live run, yet a killed owner's marker is gone
# before its lease (1000 ms) can expire, so a rerun after a crash is not mistaken for two owners at once.
MARKER_MS = 800


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_ten_thousand_jobs_complete_exactly_once_while_workers_are_killed(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, fleet: FleetFactory
) -> None:
    """SIGKILL a worker every 2 s: all 10,000 jobs complete exactly once, none lost, none run by two owners at once."""
    queue = make_queue()
    rng = random.Random(20_240_601)
    added = await queue.add_bulk([BulkJob("work", {"ms": rng.randint(5, 50)}) for _ in range(JOBS)])
    ids = [a.job_id for a in added]
    assert len(set(ids)) == JOBS
    workers = fleet(
        url=redis_url,
        prefix=prefix,
        concurrency=5,
        lease_ms=LEASE_MS,
        stalled_ms=300,
        marker_ms=MARKER_MS,
        # Every job must complete here, so a job unlucky enough to be on two killed workers is not failed.
        max_stalls=1000,
    )
    slots = [workers.spawn() for _ in range(PROCESSES)]
    started = time.monotonic()
    kills = 0
    while True:
        try:
            await wait_until(lambda: finished(queue, JOBS), timeout_s=KILL_EVERY_S, every_s=0.1)
            break
        except AssertionError:
            if time.monotonic() - started > 240:
                raise
        victim = kills % PROCESSES
        await workers.kill(slots[victim])
        slots[victim] = workers.spawn()
        kills += 1
    duration_s = time.monotonic() - started
    await workers.wait_ready(queue, slots)
    assert await workers.terminate(slots) == [0] * PROCESSES

    counts = await queue.counts()
    completed_ids = await queue.job_ids(JobState.COMPLETED)
    jobs = await queue.get_many(ids)
    runs = await recorded_runs(redis_client, queue)
    runs_per_job = Counter(str(r["id"]) for r in runs)
    reruns = sum(j.stalls for j in jobs)
    print(
        f"\nworker kills: {JOBS} jobs, {PROCESSES} processes x 5, {kills} SIGKILLs in {duration_s:.1f} s "
        f"({JOBS / duration_s:.0f} jobs/s); {reruns} reruns after a stall ({sum(1 for j in jobs if j.stalls)} jobs), "
        f"{len(runs)} recorded runs ({len(runs) - JOBS} beyond one per job), "
        f"overlaps {sum(1 for r in runs if r['overlap'])}, lost {JOBS - len(completed_ids)}"
    )
    assert kills >= 5, "the run was long enough to kill workers several times"
    assert len(completed_ids) == len(set(completed_ids)) == JOBS
    assert set(completed_ids) == set(ids), "every job is accounted for"
    assert counts[JobState.FAILED] == counts[JobState.ACTIVE] == counts[JobState.WAITING] == 0
    assert counts[JobState.DELAYED] == 0
    assert len(jobs) == JOBS
    assert all(j.state is JobState.COMPLETED for j in jobs)
    assert all(j.result == {"ok": True} for j in jobs)
    assert all(j.attempts_made == 1 for j in jobs), "one completion per job, never a second"
    assert not [r for r in runs if r["overlap"]], "no job ran under two live owners at once"
    assert set(runs_per_job) == set(ids), "every job ran to its end at least once"
