"""Shared fixtures: one real redis-server for the session, and a fresh queue prefix for every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from slack_backend.queue import JobDefaults, Queue, create_redis
from tests.support.engine import QueueFactory
from tests.support.redis_server import RedisServer

# The pipeline fixtures (fake Slack, fake Claude, the running app and worker) for every test module.
pytest_plugins = ["tests.support.pipeline"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole session; tests isolate themselves by prefix, never by flushing."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A prefix of this test's own, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    assert isinstance(client, Redis)  # a redis:// URL names one server
    yield client
    await client.aclose()


@pytest.fixture
def make_queue(redis_client: Redis, prefix: str) -> QueueFactory:
    """Factory: make_queue(name="q", defaults=...) -> a Queue under this test's prefix."""

    def factory(name: str = "q", *, defaults: JobDefaults | None = None) -> Queue:
        return Queue(name, connection=redis_client, prefix=prefix, defaults=defaults)

    return factory
