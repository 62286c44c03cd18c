"""Redis clients for the engine: one server, a Sentinel-watched master or a Cluster; retried, logged, health-checked."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slack_backend.queue._packing import packing_class
from slack_backend.queue.target import (
    CLUSTER_TLS_SCHEME,
    RedisTarget,
    cluster_url_nodes,
    is_cluster_url,
)


def _log() -> Any:
    """The module's logger, loaded at the first line logged: the command line's light commands, which log
    nothing, need not pay for structlog (and the rich it pulls in)."""
    import structlog

    return structlog.get_logger("slack_backend.queue.connection")


# Any client the engine works through: one server (plain or Sentinel-managed) or a Redis Cluster.
RedisClient = Redis | RedisCluster

# Scripts finish in well under a second; a reply that takes this long means Redis is gone or frozen.
COMMAND_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 5.0
SENTINEL_TIMEOUT_S = 2.0
# The socket timeout of a client made for blocking waits (None: a wait is never cut short by the client).
BLOCKING_SOCKET_TIMEOUT_S: float | None = None
# A burst (300 Slack requests a second through a brief stall) must not run out of connections: redis-py's default
# pool raises "Too many connections" past 100 in use, which turned acknowledged requests into lost ones. A plain
# pool with a high ceiling costs far less per command than a blocking pool (whose wait machinery made ~12% of a
# worker's CPU in the profile); a process never holds more than its concurrent requests and jobs.
MAX_CONNECTIONS = 1000
# A blocking client holds one wait at a time (plus one spare while a closed connection is replaced).
BLOCKING_MAX_CONNECTIONS = 2


def _common_kwargs(client_name: str, blocking: bool) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": BLOCKING_SOCKET_TIMEOUT_S if blocking else COMMAND_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "client_name": client_name,
    }


def _auth_kwargs(url: str) -> dict[str, Any]:
    """Password, user name, database and TLS from a URL, for data nodes whose address comes from elsewhere."""
    if is_cluster_url(url):
        parts = urlsplit(url)
        found: dict[str, Any] = {"ssl": url.startswith(CLUSTER_TLS_SCHEME)}
        if parts.username:
            found["username"] = unquote(parts.username)
        if parts.password is not None:
            found["password"] = unquote(parts.password)
        return found
    parsed: dict[str, Any] = dict(parse_url(url))
    kept = {k: parsed[k] for k in ("username", "password", "db") if parsed.get(k) is not None}
    kept["ssl"] = parsed.get("connection_class") is SSLConnection
    return kept


def create_redis(
    target: str | RedisTarget, *, client_name: str = "slack-backend", blocking: bool = False
) -> RedisClient:
    """A client with decoded replies, capped-backoff retries and a periodic health check.

    `target` is a URL (`redis://`, `rediss://`, `unix://`, or `redis+cluster://host:port,...`) or a RedisTarget.
    A Sentinel target gives a client that asks the Sentinels for the master and follows it after a failover;
    a Cluster target gives a `RedisCluster`. `blocking=True` gives a client for BLPOP-style waits (socket
    timeout `BLOCKING_SOCKET_TIMEOUT_S`, so a wait is not cut short by redis-py's default 5 s).
    """
    if isinstance(target, str):
        target = RedisTarget(url=target)
    common = _common_kwargs(client_name, blocking)
    if target.kind == "cluster":
        nodes = target.cluster_nodes or cluster_url_nodes(target.url)
        auth = _auth_kwargs(target.url)
        auth.pop("db", None)  # a Cluster has database 0 only
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            max_connections=BLOCKING_MAX_CONNECTIONS if blocking else MAX_CONNECTIONS,
            **auth,
            **common,
        )
    if target.kind == "sentinel":
        # Each client owns its Sentinel manager, so closing one client closes exactly the sockets it opened.
        # A Sentinel answers from memory; one that is slow is down, and discovery should ask the next one.
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "decode_responses": True,
        }
        if target.sentinel_password is not None:
            sentinel_kwargs["password"] = target.sentinel_password
        manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        client: Redis = manager.master_for(
            target.sentinel_master,
            redis_class=_SentinelRedis,
            max_connections=BLOCKING_MAX_CONNECTIONS if blocking else MAX_CONNECTIONS,
            **_auth_kwargs(target.url),
            **common,
        )
        pool = client.connection_pool
        pool.connection_class = packing_class(pool.connection_class)
        return client
    if target.url.startswith("unix://"):
        # A unix socket has no TCP keepalive: redis-py's UnixDomainSocketConnection refuses the option.
        common.pop("socket_keepalive")
    pool = ConnectionPool.from_url(
        target.url, max_connections=BLOCKING_MAX_CONNECTIONS if blocking else MAX_CONNECTIONS, **common
    )
    pool.connection_class = packing_class(pool.connection_class)
    return Redis.from_pool(pool)


class _SentinelRedis(Redis):
    """A Sentinel-managed master client that also closes the connections to its Sentinels when closed."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


def blocking_twin(client: RedisClient) -> RedisClient:
    """A second client to the same Redis as `client`, for blocking waits: its own small pool, no short timeout.

    A Sentinel client's twin asks the same Sentinels (so it follows the master too); a Cluster client's twin
    starts from the nodes the cluster client knows now.
    """
    if isinstance(client, RedisCluster):
        kwargs = client.get_connection_kwargs()
        keep = ("username", "password", "client_name", "decode_responses", "socket_connect_timeout")
        extra: dict[str, Any] = {k: kwargs[k] for k in keep if kwargs.get(k) is not None}
        return RedisCluster(
            # The nodes it has found, or (not yet connected) the ones it was given.
            startup_nodes=[ClusterNode(n.host, n.port) for n in client.get_nodes() or client.startup_nodes],
            max_connections=BLOCKING_MAX_CONNECTIONS,
            socket_timeout=BLOCKING_SOCKET_TIMEOUT_S,
            socket_keepalive=True,
            ssl=isinstance(cls := kwargs.get("connection_class"), type) and issubclass(cls, SSLConnection),
            **extra,
        )
    pool = client.connection_pool
    # No retries: redis-py would re-send a wait whose reply was lost as a whole, and the re-sent BLPOP can block
    # for the rest of the idle wait before the fetch behind it replays the leased jobs, longer than their lease.
    # The worker sends that fetch again itself at once, on its main client.
    kwargs = {**pool.connection_kwargs, "socket_timeout": BLOCKING_SOCKET_TIMEOUT_S, "retry": Retry(NoBackoff(), 0)}
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("connection_pool", None)
        old = pool.sentinel_manager
        manager = Sentinel(  # type: ignore[no-untyped-call]
            [
                (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                for s in old.sentinels
            ],
            sentinel_kwargs=old.sentinel_kwargs,
        )
        return _SentinelRedis.from_pool(
            SentinelConnectionPool(  # type: ignore[no-untyped-call]
                pool.service_name,
                manager,
                connection_class=pool.connection_class,
                max_connections=BLOCKING_MAX_CONNECTIONS,
                **kwargs,
            )
        )
    return Redis.from_pool(
        ConnectionPool(connection_class=pool.connection_class, max_connections=BLOCKING_MAX_CONNECTIONS, **kwargs)
    )


async def ping(client: RedisClient) -> bool:
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
            _log().info("redis ready", client=self._name, recovered=self._ok is False)
            self._recovered.set()
        self._ok = True
        self.backoff.reset()

    async def failed(self, exc: BaseException) -> None:
        """Log the error (once per outage) and sleep the next backoff step, or until another loop reconnects."""
        if self._ok is not False:
            _log().error("redis error", client=self._name, error=f"{type(exc).__name__}: {exc}")
            self._recovered.clear()
        self._ok = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.backoff.next_delay_s()):
                await self._recovered.wait()


@dataclass(frozen=True)
class ServerSafety:
    """What a Redis server would do to queue keys: evict them under memory pressure, or lose them on a restart.

    Each field is None when the server refused to say (managed Redis often refuses CONFIG GET).
    """

    maxmemory_policy: str | None
    aof: bool | None
    rdb_saves: bool | None

    @property
    def problems(self) -> list[str]:
        """Plain sentences, one per setting that puts jobs at risk; empty when none does (or none is known)."""
        found: list[str] = []
        if self.maxmemory_policy is not None and self.maxmemory_policy != "noeviction":
            found.append(
                f"maxmemory-policy is {self.maxmemory_policy}: Redis may evict queue keys under memory pressure "
                "(set noeviction)"
            )
        if self.aof is False and self.rdb_saves is False:
            found.append("persistence is off (no AOF, no RDB save): a Redis restart loses every job (appendonly yes)")
        return found

    def describe(self) -> dict[str, str]:
        """The three settings as text for /readyz and check-config; `unknown` where the server would not say."""

        def text(value: bool | str | None) -> str:
            if value is None:
                return "unknown"
            if isinstance(value, bool):
                return "on" if value else "off"
            return value

        return {
            "maxmemory_policy": text(self.maxmemory_policy),
            "aof": text(self.aof),
            "rdb_save": text(self.rdb_saves),
        }


async def _config_get(client: RedisClient, name: str) -> str | None:
    try:
        if isinstance(client, RedisCluster):
            # Every primary holds queues, so each one's answer counts: differing answers come back comma-joined.
            replies: Any = await client.config_get(name, target_nodes=RedisCluster.PRIMARIES)
            answers = replies.values() if isinstance(replies, dict) else [replies]
            found = {str(value) for answer in answers for key, value in dict(answer).items() if key == name}
            return ",".join(sorted(found)) if found else None
        reply = await client.config_get(name)
    except (RedisError, OSError):
        return None
    value = dict(reply).get(name)
    return None if value is None else str(value)


async def server_safety(client: RedisClient) -> ServerSafety:
    """Ask the server (CONFIG GET) how it evicts and persists; fields it refuses to tell are None."""
    policy = await _config_get(client, "maxmemory-policy")
    aof = await _config_get(client, "appendonly")
    save = await _config_get(client, "save")
    return ServerSafety(
        maxmemory_policy=policy,
        aof=None if aof is None else all(part == "yes" for part in aof.split(",")),
        rdb_saves=None if save is None else all(part.strip() for part in save.split(",")),
    )


# Start-up must not wait out a Redis outage for a warning: past this the settings count as unknown.
SAFETY_CHECK_TIMEOUT_S = 3.0


async def warn_unsafe_server(client: RedisClient, *, component: str) -> ServerSafety:
    """Check the server at start and log each setting that puts jobs at risk as an error (loud, not fatal)."""
    safety = ServerSafety(maxmemory_policy=None, aof=None, rdb_saves=None)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SAFETY_CHECK_TIMEOUT_S):
            safety = await server_safety(client)
    for problem in safety.problems:
        _log().error("redis setting puts jobs at risk", component=component, problem=problem)
    if safety.maxmemory_policy is None:
        _log().warning("redis settings unknown: CONFIG GET refused or unanswered", component=component)
    return safety
