"""The benchmark's own redis-server: a free loopback port, no persistence, gone when the run ends."""

from __future__ import annotations

from pathlib import Path

import redis

from slack_backend.queue.testing import RedisServer, free_port

__all__ = ["BenchRedis", "free_port"]


class BenchRedis(RedisServer):
    """A dedicated redis-server (no persistence) so no other client's traffic lands in the figures."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, appendonly=False)

    def flush(self) -> None:
        """Empty the server between systems, so one's leftovers never weigh on the next."""
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def version(self) -> str:
        client = redis.Redis.from_url(self.url)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
