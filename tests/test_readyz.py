"""/readyz: ready only while Redis and the database answer and, when workers are expected, one of them beats."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from slack_backend.config import Settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import Job, Worker
from tests.support.app import SettingsFactory, served
from tests.support.engine import running, wait_until
from tests.support.redis_server import RedisServer

LEASE_MS = 1_000


@pytest.fixture
def make_settings(make_settings: SettingsFactory) -> SettingsFactory:
    """The shared settings with a 1 s lease, so a worker's heartbeat goes stale quickly."""

    def factory(**overrides: str) -> Settings:
        return make_settings(**{"JOB_LEASE_MS": str(LEASE_MS), **overrides})

    return factory


async def idle(job: Job) -> None:
    return None


async def test_ready_when_redis_database_and_a_worker_answer(
    make_settings: Callable[..., Settings], redis_client: Redis
) -> None:
    """200 with Redis and the database up; with workers expected, also a live worker heartbeat."""
    settings = make_settings()
    worker = Worker(ai_responses_queue(redis_client, settings), idle, lease_ms=LEASE_MS, idle_block_s=0.2)
    async with served(settings) as client:
        without_workers = await client.get("/readyz")
    async with running(worker), served(settings, expect_workers=True) as client:
        await wait_until(lambda: _has_heartbeat(redis_client, settings))
        with_worker = await client.get("/readyz")
    assert (without_workers.status_code, without_workers.json()["status"]) == (200, "ok")
    assert (with_worker.status_code, with_worker.json()["status"]) == (200, "ok")


async def test_not_ready_when_workers_are_expected_but_none_beats(
    make_settings: Callable[..., Settings], redis_client: Redis
) -> None:
    """Workers expected: 503 with no heartbeat at all, and with one older than three lease renewals (one lease)."""
    settings = make_settings()
    queue = ai_responses_queue(redis_client, settings)
    async with served(settings, expect_workers=True) as client:
        none = await client.get("/readyz")
        stale_beat = {"last_seen_ms": int(time.time() * 1000) - 3 * LEASE_MS, "running": 0, "concurrency": 5}
        await redis_client.hset(queue.keys.key("workers"), "gone-worker", json.dumps(stale_beat))
        stale = await client.get("/readyz")
    assert none.status_code == 503
    assert none.json() == {"status": "unavailable", "reason": "workers: no worker heartbeat"}
    assert stale.status_code == 503
    assert stale.json()["reason"].startswith("workers: newest heartbeat 3.")


async def test_not_ready_while_redis_is_down_and_ready_again_after(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Redis stops: 503 within seconds with a redis reason; Redis returns: 200 again without a restart."""
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    try:
        async with served(make_settings(REDIS_URL=server.url)) as client:
            before = await client.get("/readyz")
            await asyncio.to_thread(server.stop)
            started = time.monotonic()
            down = await client.get("/readyz")
            down_after_s = time.monotonic() - started
            await asyncio.to_thread(server.start)

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until(ready, timeout_s=10, every_s=0.1)
    finally:
        await asyncio.to_thread(server.stop)
    assert before.status_code == 200
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert down.json()["reason"].startswith("redis: ")
    # Answered within seconds (the check bounds each probe by READY_TIMEOUT_S), not after a client or TCP timeout;
    # 5 s is room for a loaded 2-core machine.
    assert down_after_s < 5


async def test_not_ready_when_the_database_does_not_answer(make_settings: Callable[..., Settings]) -> None:
    """A database that does not answer: 503 with a database reason, though Redis is fine."""
    # PostgreSQL on a closed port: refused at once. (A SQLite file that cannot be opened would do too, but aiosqlite
    # then stops its thread without waiting, which can call back into the test's closed event loop.)
    closed = "postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none"
    async with served(make_settings(DATABASE_URL=closed)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("database: ")


async def _has_heartbeat(redis: Redis, settings: Settings) -> bool:
    return bool(await ai_responses_queue(redis, settings).workers())
