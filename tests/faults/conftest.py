"""Fixtures for fault tests: a fleet of worker processes, and redis-servers of the test's own to crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fleet import FleetFactory, ServerFactory, WorkerFleet
from tests.support.redis_server import RedisServer


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
