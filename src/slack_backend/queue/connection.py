"""Redis clients for the engine: built from a URL, retried with capped backoff, logged, health-checked."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("slack_backend.queue.connection")

# Scripts finish in well under a second; a reply that takes this long means Redis is gone or frozen.
COMMAND_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 5.0
# A burst (300 Slack requests a second through a brief stall) must not run out of connections: redis-py's default
# pool raises "Too many connections" past 100 in use, which turned acknowledged requests into lost ones. A plain
# pool with a high ceiling costs far less per command than a blocking pool (whose wait machinery made ~12% of a
# worker's CPU in the profile); a process never holds more than its concurrent requests and jobs.
MAX_CONNECTIONS = 1000


def create_redis(url: str, *, client_name: str = "slack-backend", blocking: bool = False) -> Redis:
    """A redis.asyncio client with decoded replies, capped-backoff retries and a periodic health check.

    `blocking=True` gives a client for BLPOP-style waits: no socket timeout, so a wait is never cut short
    (redis-py 8 otherwise sets socket_timeout=5 s, which breaks longer blocking reads).
    """
    pool = ConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        decode_responses=True,
        socket_timeout=None if blocking else COMMAND_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        client_name=client_name,
    )
    return Redis.from_pool(pool)


async def ping(client: Redis) -> bool:
    """True when Redis answers PING now; never raises."""
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False


@dataclass
class ReconnectBackoff:
    """Capped exponential backoff with jitter for loops that must outlive a Redis outage."""

    base_s: float = 0.1
    cap_s: float = 5.0
    failures: int = 0

    def next_delay_s(self) -> float:
        self.failures += 1
        delay: float = min(self.cap_s, self.base_s * (2.0 ** (self.failures - 1)))
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.failures = 0


class ConnectionWatch:
    """Logs `redis ready` / `redis error` once per change of state, not once per failed call.

    Several loops share one watch: when any of them reaches Redis again, the others' backoff sleeps end at once,
    so an idle loop does not sit out the rest of its backoff while Redis is already back.
    """

    def __init__(self, name: str, *, cap_s: float = 5.0) -> None:
        self._name = name
        self._ok: bool | None = None
        self._recovered = asyncio.Event()
        self.backoff = ReconnectBackoff(cap_s=cap_s)

    def ready(self) -> None:
        if self._ok is not True:
            log.info("redis ready", client=self._name, recovered=self._ok is False)
            self._recovered.set()
        self._ok = True
        self.backoff.reset()

    async def failed(self, exc: BaseException) -> None:
        """Log the error (once per outage) and sleep the next backoff step, or until another loop reconnects."""
        if self._ok is not False:
            log.error("redis error", client=self._name, error=f"{type(exc).__name__}: {exc}")
            self._recovered.clear()
        self._ok = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.backoff.next_delay_s()):
                await self._recovered.wait()
