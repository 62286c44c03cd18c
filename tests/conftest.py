"""Shared fixtures: one real redis-server for the session, a fresh queue prefix for every test, and the fixtures
that start processes (worker fleets, the shipped commands, redis-servers to crash), each stopping all it started."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from slack_backend.queue import JobDefaults, Queue, create_redis
from tests.support.engine import QueueFactory
from tests.support.fleet import FleetFactory, ServerFactory, WorkerFleet
from tests.support.procs import kill_leftovers
from tests.support.redis_server import RedisServer
from tests.support.services import Services

# The pipeline fixtures (fake Slack, fake Claude, the running app and worker), the app fixtures (make_settings,
# serve) for every test module, and the rule
# that a skip fails the run under FORBID_SKIPS=1 unless tests/allowed-skips.txt lists it.
pytest_plugins = ["tests.support.app", "tests.support.pipeline", "tests.support.strict_skips"]


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


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    """Factory: fleet(url=..., prefix=..., **cfg) -> a WorkerFleet; every process it started is stopped at the end."""
    made: list[WorkerFleet] = []

    def factory(**base: Any) -> WorkerFleet:
        f = WorkerFleet(base, tmp_path / f"fleet{len(made)}")
        made.append(f)
        return f

    yield factory
    for f in made:
        f.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Starts `slack-backend` commands as real processes; every one (and every child of one) is killed at the end."""
    started = Services(tmp_path / "services")
    yield started
    started.close()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory: a started redis-server of this test's own with AOF on (appendfsync everysec); stopped at the end."""
    servers: list[RedisServer] = []

    def factory() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", appendonly=True)
        servers.append(server)
        server.start()
        return server

    yield factory
    for s in servers:
        s.stop(kill=True)


@pytest.fixture(scope="session", autouse=True)
def _repo_root_stays_clean() -> Iterator[None]:
    """No test writes into the checkout's root (a default ./slack-backend.db, logs, ...): checked once per session."""
    root = Path(__file__).resolve().parent.parent
    # Caches pytest and the tools make for themselves are not test output.
    ignored = {".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
    before = {p.name for p in root.iterdir()}
    yield
    new = sorted({p.name for p in root.iterdir()} - before - ignored)
    assert new == [], f"tests created {new} in {root}; give them a tmp_path"


@pytest.fixture(autouse=True)
def _no_spawned_process_outlives_its_test() -> Iterator[None]:
    """Whatever a test started through tests.support.procs.spawn and left running is killed when it ends."""
    yield
    kill_leftovers()
