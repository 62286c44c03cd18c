"""Partitions end: a worker cut off from Redis by a blackhole (packets dropped both ways, no reset) stops a run
whose lease it could not renew, has what it finished while cut off refused by fencing, and takes work again soon
after the link returns, with no restart.

The cut here is made by the fault proxy's blackhole mode (tests/support/fault_proxy.py), which drops bytes and
keeps both sockets open, as a partition looks to each end. tests/faults/test_netns_partition.py cuts a real link
(a worker process in its own network namespace)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from slack_backend.queue import Job, JobEvent, JobState, LeaseLostError, Queue, Worker, create_redis
from tests.support.engine import running, wait_until
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.sentinel_cluster import overlapping_runs

LEASE_MS = 4000
# The short job ends inside its lease (so its completion is written while cut off); the long one outlives it.
SHORT_S = 3.2
LONG_S = 6.0


async def test_a_blackholed_worker_resumes_after_the_link_returns_and_its_late_finish_is_fenced(
    redis_server: RedisServer, prefix: str
) -> None:
    """Cut a busy worker off: at its lease's end it stops the run it could not renew, another worker takes both
    jobs over, never two runs at once; once the link is back its late completion and release are refused, and it
    starts new work within lease + 5 s, never restarted."""
    proxy = FaultProxy("127.0.0.1", redis_server.port)
    await proxy.start()
    cut_client = create_redis(proxy.url)
    direct_client = create_redis(redis_server.url)
    cut_queue = Queue("q", connection=cut_client, prefix=prefix)
    queue = Queue("q", connection=direct_client, prefix=prefix)
    runs: list[dict[str, object]] = []

    def processor(name: str, long_s: float, short_s: float) -> Callable[[Job], Awaitable[str]]:
        async def process(job: Job) -> str:
            run: dict[str, object] = {"id": job.id, "by": name, "start_ms": int(time.time() * 1000)}
            runs.append(run)
            try:
                await asyncio.sleep({"long": long_s, "short": short_s}.get(job.id, 0.01))
                run["finished"] = True
            finally:
                run["end_ms"] = int(time.time() * 1000)
            return name

        return process

    cut = Worker(cut_queue, processor("cut", LONG_S, SHORT_S), concurrency=2, lease_ms=LEASE_MS, idle_block_s=2)
    errors: list[JobEvent] = []
    cut.on("error", errors.append)
    rescuer = Worker(queue, processor("rescuer", 1.0, 1.0), lease_ms=LEASE_MS, stalled_interval_ms=200)
    try:
        async with running(cut):
            await queue.add("x", {}, job_id="long")
            await queue.add("x", {}, job_id="short")
            await wait_until(_held_by(queue, ["long", "short"], cut.id))
            proxy.blackhole()
            cut_at = time.monotonic()
            async with running(rescuer):
                # Both leases run out unrenewed; the rescuer's stall check recovers the jobs and runs them.
                await wait_until(_held_by(queue, ["long", "short"], rescuer.id), timeout_s=LEASE_MS / 1000 + 10)
                proxy.heal()
                healed = time.monotonic()
                healed_wall = time.time()
                await wait_until(_completed(queue, ["long", "short"]), timeout_s=10)
            await queue.add("x", {}, job_id="after")
            await wait_until(_completed(queue, ["after"]), timeout_s=LEASE_MS / 1000 + 8)
            await wait_until(lambda: _refused(errors, 2), timeout_s=LEASE_MS / 1000 + 2)
    finally:
        await proxy.stop()
        await cut_client.aclose()
        await direct_client.aclose()
    after = next(r for r in runs if r["id"] == "after")
    resumed_s = int(str(after["start_ms"])) / 1000 - healed_wall
    refused = sorted(str(e.job_id) for e in errors if isinstance(e.error, LeaseLostError))
    print(
        f"\npartition by: proxy blackhole; cut {healed - cut_at:.1f} s (lease {LEASE_MS} ms); late finishes refused: "
        f"{refused}; run twice at once {overlapping_runs(runs)}; cut-off worker took new work {resumed_s:.2f} s "
        "after the link returned"
    )
    by_job = {job: [(r["by"], bool(r.get("finished"))) for r in runs if r["id"] == job] for job in ("long", "short")}
    assert by_job["long"] == [("cut", False), ("rescuer", True)], "the unrenewed long run was stopped"
    assert by_job["short"] == [("cut", True), ("rescuer", True)]
    assert overlapping_runs(runs) == 0, "two runs of one job at once"
    assert refused == ["long", "short"]  # its release and its completion, both refused by fencing
    for job_id in ("long", "short"):
        assert await queue_result(redis_server.url, prefix, job_id) == "rescuer"  # the lease holder's result stands
    assert after["by"] == "cut"
    assert resumed_s <= LEASE_MS / 1000 + 5


def _held_by(queue: Queue, job_ids: list[str], worker_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        jobs = [await queue.get(job_id) for job_id in job_ids]
        return all(j is not None and j.state is JobState.ACTIVE and j.worker == worker_id for j in jobs)

    return check


def _completed(queue: Queue, job_ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        jobs = [await queue.get(job_id) for job_id in job_ids]
        return all(j is not None and j.state is JobState.COMPLETED for j in jobs)

    return check


async def _refused(errors: list[JobEvent], n: int) -> bool:
    return sum(1 for e in errors if isinstance(e.error, LeaseLostError)) >= n


async def queue_result(url: str, prefix: str, job_id: str) -> object:
    client = create_redis(url)
    try:
        job = await Queue("q", connection=client, prefix=prefix).get(job_id)
        return None if job is None else job.result
    finally:
        await client.aclose()
