"""Redis crashes: SIGKILL redis-server (AOF on, fsync every second) mid-run and restart it; nothing acked is lost.

Redis writes the AOF (a write to the OS, not yet an fsync) before it replies, so a killed process loses nothing it
acknowledged, the last second included; `everysec` bounds only what a crash of the machine itself can lose, which
this test does not simulate (docs/reliability.md says so)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from redis.exceptions import RedisError

from slack_backend.config import load_settings
from slack_backend.queue import JobState, Queue, create_redis
from tests.support.engine import wait_until
from tests.support.fleet import FleetFactory, ServerFactory, now_ms, served_app
from tests.support.slack_requests import BOT_TOKEN, SECRET

# appendfsync everysec: the window a machine crash could lose. A process kill must lose nothing, in it or before it;
# the window is only used to show that the kill came while adds were being acknowledged.
FSYNC_WINDOW_MS = 1000


class Producer:
    """Adds jobs with ids of its own, one after another, retrying through outages; records when each add was acked."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.acked_ms: dict[str, int] = {}
        self.failed_adds = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self._stop.is_set():
            job_id = f"job-{n:06d}"
            while True:
                try:
                    await self.queue.add("work", {"ms": 10}, job_id=job_id)
                    break
                except RedisError:
                    # Not acknowledged: the same id is tried again, so a write that did land is not doubled.
                    self.failed_adds += 1
                    if self._stop.is_set():
                        return
                    await asyncio.sleep(0.05)
            self.acked_ms[job_id] = now_ms()
            n += 1
            await asyncio.sleep(0.005)  # pacing: about the rate the worker drains

    def stop(self) -> None:
        self._stop.set()


async def _status(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_redis_crash_with_aof_loses_no_acked_job_even_in_the_last_second(
    aof_redis: ServerFactory, fleet: FleetFactory, prefix: str, tmp_path: Path
) -> None:
    """SIGKILL Redis mid-run, restart it: no acked job is lost, the last second's included; all recover alone."""
    server = aof_redis()
    client = create_redis(server.url)
    queue = Queue("q", connection=client, prefix=prefix)
    settings = load_settings(
        {
            "REDIS_URL": server.url,
            "REDIS_PREFIX": prefix,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        }
    )
    workers = fleet(url=server.url, prefix=prefix, concurrency=5, lease_ms=1000, stalled_ms=300, max_stalls=100)
    worker = workers.spawn()
    producer = Producer(queue)
    producing = asyncio.create_task(producer.run())
    try:
        async with served_app(settings, quiet=True) as web:
            await workers.wait_ready(queue, [worker])

            async def under_way() -> bool:
                return len(producer.acked_ms) >= 600 and (await queue.counts())[JobState.COMPLETED] >= 300

            await wait_until(under_way, timeout_s=60, every_s=0.05)
            kill_ms = now_ms()
            server.stop(kill=True)
            acked_before_kill = len(producer.acked_ms)
            ready_while_down = await _status(web)
            await asyncio.to_thread(server.start)
            up_ms = now_ms()

            async def web_ready() -> bool:
                return await _status(web) == 200

            await wait_until(web_ready, timeout_s=20, every_s=0.02)
            web_ready_ms = now_ms()
            probe_id = "probe-after-restart"
            while True:
                try:
                    await queue.add("work", {"ms": 1}, job_id=probe_id)
                    break
                except RedisError:
                    await asyncio.sleep(0.02)

            async def probe_done() -> bool:
                job = await queue.get(probe_id)
                return job is not None and job.state is JobState.COMPLETED

            await wait_until(probe_done, timeout_s=20, every_s=0.02)
            worker_ready_ms = now_ms()

            # A little more load after the restart, then account for every job.
            await wait_until(_more_acked(producer, acked_before_kill + 200), timeout_s=30, every_s=0.05)
            producer.stop()
            await producing
            acked = dict(producer.acked_ms)
            kept = {j.id: j for j in await queue.get_many(sorted(acked))}
            lost = sorted(set(acked) - set(kept))
            lost_old = [i for i in lost if acked[i] < kill_ms - FSYNC_WINDOW_MS]
            lost_recent = [i for i in lost if acked[i] >= kill_ms - FSYNC_WINDOW_MS]

            async def all_kept_completed() -> bool:
                done = set(await queue.job_ids(JobState.COMPLETED))
                return set(kept) <= done

            await wait_until(all_kept_completed, timeout_s=60, every_s=0.1)
            jobs = await queue.get_many(sorted(kept))
            assert worker.poll() is None, "the worker process lived through the crash"
            assert await _status(web) == 200
        reruns = sum(j.stalls for j in jobs)
        print(
            f"\nredis crash: {len(acked)} jobs acked ({acked_before_kill} before the kill, "
            f"{sum(1 for t in acked.values() if t >= kill_ms - FSYNC_WINDOW_MS and t < kill_ms)} in its last second); "
            f"lost: {len(lost_old)} acked >1 s before the kill, {len(lost_recent)} within 1 s; "
            f"Redis back {up_ms - kill_ms} ms after the kill; web /readyz 200 after {web_ready_ms - up_ms} ms "
            f"(503 while down: {ready_while_down == 503}); worker ran a new job {worker_ready_ms - up_ms} ms after; "
            f"{producer.failed_adds} adds refused during the outage and retried; {reruns} reruns after a stall"
        )
        assert ready_while_down == 503
        acked_last_second = sum(1 for t in acked.values() if kill_ms - FSYNC_WINDOW_MS <= t < kill_ms)
        assert acked_last_second > 0, "the kill came while adds were being acknowledged"
        assert lost_old == [], "jobs acked more than a second before the crash survive it"
        assert lost_recent == [], "jobs acked in the last second before the kill survive it too (AOF written first)"
        assert all(j.state is JobState.COMPLETED for j in jobs)
        assert worker_ready_ms - up_ms < 10_000
        assert web_ready_ms - up_ms < 5_000
        assert await workers.terminate([worker]) == [0]
    finally:
        producer.stop()
        await producing
        await client.aclose()


def _more_acked(producer: Producer, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(producer.acked_ms) >= n

    return check
