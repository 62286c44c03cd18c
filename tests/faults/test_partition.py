"""Partitions end: a worker cut off from Redis by a blackhole (packets dropped both ways, no reset) takes work again
soon after the link returns, with no restart, and what it finished while cut off is refused by fencing.

The cut is made by the fault proxy's blackhole mode (tests/support/fault_proxy.py), which drops bytes and keeps
both sockets open, as a partition looks to each end; network namespaces are not used here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from slack_backend.queue import Job, JobEvent, JobState, LeaseLostError, Queue, Worker, create_redis
from tests.support.engine import job_in_state, running, wait_until
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_server import RedisServer

LEASE_MS = 2000


async def test_a_blackholed_worker_resumes_after_the_link_returns_and_its_late_finish_is_fenced(
    redis_server: RedisServer, prefix: str
) -> None:
    """Cut a busy, partly idle worker off for 4 s: another worker takes its job over; once the link is back, the
    cut-off worker's late completion is refused, and it starts new work within lease + 5 s, never restarted."""
    proxy = FaultProxy("127.0.0.1", redis_server.port)
    await proxy.start()
    cut_client = create_redis(proxy.url)
    direct_client = create_redis(redis_server.url)
    cut_queue = Queue("q", connection=cut_client, prefix=prefix)
    queue = Queue("q", connection=direct_client, prefix=prefix)
    ran_by: dict[str, list[str]] = {}
    started_at: dict[str, float] = {}

    def processor(name: str, job_s: float) -> Callable[[Job], Awaitable[str]]:
        async def process(job: Job) -> str:
            ran_by.setdefault(job.id, []).append(name)
            started_at.setdefault(f"{job.id}@{name}", time.monotonic())
            await asyncio.sleep(job_s if job.id == "long" else 0.01)
            return name

        return process

    # Concurrency 2: while its job runs, the cut-off worker also sits in a blocking fetch on the dead link.
    cut = Worker(
        cut_queue, processor("cut", 3.0), concurrency=2, lease_ms=LEASE_MS, stalled_interval_ms=500, idle_block_s=2
    )
    errors: list[JobEvent] = []
    cut.on("error", errors.append)
    rescuer = Worker(queue, processor("rescuer", 0.2), lease_ms=LEASE_MS, stalled_interval_ms=200)
    try:
        async with running(cut):
            await queue.add("x", {}, job_id="long")
            await wait_until(job_in_state(queue, "long", JobState.ACTIVE))
            proxy.blackhole()
            async with running(rescuer):
                # The lease runs out unrenewed; the rescuer's stall check recovers the job and runs it.
                await wait_until(job_in_state(queue, "long", JobState.COMPLETED), timeout_s=10)
            await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - started_at["long@cut"])))
            proxy.heal()
            healed = time.monotonic()
            await queue.add("x", {}, job_id="after")
            await wait_until(job_in_state(queue, "after", JobState.COMPLETED), timeout_s=LEASE_MS / 1000 + 8)
            resumed_s = started_at["after@cut"] - healed
            await wait_until(lambda: _has_lease_lost(errors), timeout_s=5)
    finally:
        await proxy.stop()
        await cut_client.aclose()
        await direct_client.aclose()
    print(f"\npartition by: proxy blackhole; cut-off worker took new work {resumed_s:.2f} s after the link returned")
    assert ran_by["long"] == ["cut", "rescuer"]
    assert ran_by["after"] == ["cut"]
    job = await queue_result(redis_server.url, prefix, "long")
    assert job == "rescuer"  # the cut-off worker's late result was refused: the lease holder's stands
    assert resumed_s <= LEASE_MS / 1000 + 5


async def _has_lease_lost(errors: list[JobEvent]) -> bool:
    return any(isinstance(e.error, LeaseLostError) for e in errors)


async def queue_result(url: str, prefix: str, job_id: str) -> object:
    client = create_redis(url)
    try:
        job = await Queue("q", connection=client, prefix=prefix).get(job_id)
        return None if job is None else job.result
    finally:
        await client.aclose()
