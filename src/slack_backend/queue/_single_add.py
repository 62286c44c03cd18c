"""The one-by-one add's wire path: EVALSHA of `add` as bytes whose script id, keys and TTL were packed once.

redis-py packs every argument of every call (an add carries 13 key names: 17 arguments against LPUSH's 3), and
that packing was the largest share of the client's CPU per add. Here only the job's one argument is packed per
call; the rest is a prefix built when the queue is made. Any reply the ordinary path would handle (NOSCRIPT, a
lost connection, a timeout, a read-only former master) is left to it: the caller sends the same add again through
`Scripts.call`, which reloads the script or retries with backoff. Sending it twice is safe, since the job id is
chosen before the first send.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slack_backend.queue._scripts import script_source
from slack_backend.queue.connection import RedisClient

# What the ordinary path recovers from (the client's retry_on_error, NOSCRIPT); anything else is the add's answer.
_HANDED_ON = (NoScriptError, RedisConnectionError, RedisTimeoutError)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class SingleAdd:
    """Sends one add on a pooled connection of a plain or Sentinel client (a Cluster's goes the ordinary way)."""

    def __init__(self, client: Redis, keys: Sequence[str], dedup_ttl_ms: int) -> None:
        sha = hashlib.sha1(script_source("add").encode()).hexdigest()  # Redis names scripts by SHA-1
        head = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *(k.encode() for k in keys), b"%d" % dedup_ttl_ms]
        self._prefix = b"*%d\r\n" % (len(head) + 1) + b"".join(_bulk(a) for a in head)
        self._pool = client.connection_pool

    @classmethod
    def for_client(cls, client: RedisClient, keys: Sequence[str], dedup_ttl_ms: int) -> SingleAdd | None:
        """The path for `client`, or None where only the ordinary one applies (Cluster, single-connection)."""
        if not isinstance(client, Redis) or client.single_connection_client:
            return None
        return cls(client, keys, dedup_ttl_ms)

    async def add(self, spec: str) -> list[object] | None:
        """The script's reply to one job's spec, or None: send it again through the ordinary path."""
        packed = spec.encode()
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command([self._prefix, b"$%d\r\n" % len(packed), packed, b"\r\n"])
            reply: list[object] = await conn.read_response()
        except _HANDED_ON:
            # The connection was closed by redis-py on a lost link or a timeout; NOSCRIPT leaves it clean.
            return None
        finally:
            # Safe to give back even after a cancel: redis-py's send and read drop the connection on any exception,
            # so none returns to the pool with a reply still on its way (test_engine_add).
            await self._pool.release(conn)
        return reply
