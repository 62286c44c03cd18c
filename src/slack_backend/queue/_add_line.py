"""The one-by-one add's wire path: a connection of the client's own, adds pipelined on it, replies taken in order.

Through redis-py, each add takes a pooled connection (checking it for stray data), writes, reads the reply through a
stream reader and gives the connection back: about as much client CPU as the add's own work. Here one connection
per client (shared by every queue on it), made afresh and handshaken by redis-py (so AUTH, TLS, the Sentinel's
master and the RESP version are redis-py's), is taken over: its transport is handed a protocol that feeds replies
to hiredis and answers the adds in the order they were written, several in flight at once when concurrent requests
add. The script id, keys and TTL are packed once per queue.

Any trouble hands the add on: an error reply (NOSCRIPT, READONLY from a former master), a lost connection, no reply
within the client's socket timeout. The line is then closed, and the caller sends the same add through
`Scripts.call`, which reloads the script or retries with backoff; sending it twice is safe, since the job id is
chosen before the first send. The next add opens a new line; when an open fails (Redis away), the adds of the next
second go the ordinary way without trying another. A cancelled add's reply is read and dropped, so it can never
answer the add behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from slack_backend.queue.connection import RedisClient

# After a failed open, adds go the ordinary way for this long before a line is tried again.
_REST_AFTER_FAILED_OPEN_S = 1.0
_ONE_ATTEMPT = Retry(NoBackoff(), 0)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class _Replies(asyncio.Protocol):
    """Reads one connection's replies and resolves the waiting adds in order; None to each when the line fails."""

    def __init__(self, stream_protocol: asyncio.BaseProtocol, reader: Any, timeout_s: float | None) -> None:
        # redis-py's own protocol, told when the connection ends so its writer's wait_closed returns.
        self._stream_protocol = stream_protocol
        self._reader = reader
        self._timeout_s = timeout_s
        # The loop the line belongs to (it is made on it): each asyncio.get_running_loop() costs a getpid() system
        # call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._replies = 0  # counted for the watchdog: a line that answers nothing for a whole timeout is dead
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # asyncio's or uvloop's, which derives from neither

    def send(self, request: bytes) -> asyncio.Future[Any]:
        """Write one request; the future gets its reply, or None if the line fails first."""
        assert self._transport is not None
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._waiters.append(waiter)
        self._transport.write(request)
        if self._timer is None and self._timeout_s is not None:
            self._arm()
        return waiter

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        try:
            while (reply := reader.gets()) is not False:
                self._replies += 1
                waiter = waiters.popleft()
                if not waiter.done():  # a cancelled add's reply is dropped here, in its turn
                    waiter.set_result(None if isinstance(reply, hiredis.ReplyError) else reply)
                if isinstance(reply, hiredis.ReplyError):
                    self.close()
                    return
        except (hiredis.ProtocolError, IndexError):  # not RESP, or a reply nobody asked for: nothing more is trusted
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._stream_protocol.connection_lost(exc)

    def close(self) -> None:
        """Close the line at once; adds still waiting are handed on (None)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _arm(self) -> None:
        assert self._timeout_s is not None
        seen = self._replies
        self._timer = self._loop.call_later(self._timeout_s, self._check, seen)

    def _check(self, seen: int) -> None:
        self._timer = None
        if not self._waiters:
            return
        if self._replies == seen:  # a whole timeout with adds waiting and not one reply
            self.close()
        else:
            self._arm()


class AddLine:
    """The queue's one-by-one adds, pipelined on its client's line, for a plain or Sentinel client."""

    def __init__(self, client: Redis, sha: str, keys: Sequence[str], dedup_ttl_ms: int) -> None:
        head = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *(k.encode() for k in keys), b"%d" % dedup_ttl_ms]
        self._prefix = b"*%d\r\n" % (len(head) + 1) + b"".join(_bulk(a) for a in head)
        pool = client.connection_pool
        # Kept on the pool itself, so it lives exactly as long as the pool (a weak mapping from pool to line
        # would keep the pool alive through the line's own references to it).
        shared: _PoolLine | None = getattr(pool, _POOL_ATTRIBUTE, None)
        if shared is None:
            shared = _PoolLine(pool)
            setattr(pool, _POOL_ATTRIBUTE, shared)
        self._shared = shared

    @classmethod
    def for_client(cls, client: RedisClient, sha: str, keys: Sequence[str], dedup_ttl_ms: int) -> AddLine | None:
        """The path for `client` (the add script's SHA-1 and keys as the queue registered them), or None where only
        the ordinary one applies (Cluster, single-connection)."""
        if not isinstance(client, Redis) or client.single_connection_client:
            return None
        return cls(client, sha, keys, dedup_ttl_ms)

    @property
    def current(self) -> _Replies | None:
        """The client's line as it is now (open, closed, or none yet)."""
        return self._shared.current

    async def add(self, spec: str) -> Any:
        """The script's reply to one job's spec, or None: send it again through the ordinary path."""
        shared = self._shared
        line = shared.current
        # An add runs on a running loop, so a line whose loop is not running is another loop's. Asked this way,
        # not by asyncio.get_running_loop(), which makes a getpid() system call on Python 3.11. (A running loop
        # of another thread is not asked about: redis-py's asyncio clients belong to one thread.)
        if line is None or line.closed or shared.loop is None or not shared.loop.is_running():
            line = await shared.open()
            if line is None:
                return None
        packed = spec.encode()
        return await line.send(b"".join((self._prefix, b"$%d\r\n" % len(packed), packed, b"\r\n")))


class _PoolLine:
    """The line of one client's pool, shared by every queue adding through that client: however many Queue
    objects a program makes, a client holds one such connection."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self.current: _Replies | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None
        self._opening: asyncio.Lock | None = None
        self._resting_until = 0.0  # loop time before which no line is opened

    async def open(self) -> _Replies | None:
        """The open line, opening one if needed; None when none can be had now."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            # A line belongs to the loop that made it (a test's or a command's own loop); another loop's is left
            # to its pool, which closes it with the client.
            self.current, self._conn, self.loop, self._opening = None, None, loop, asyncio.Lock()
        assert self._opening is not None
        async with self._opening:
            if self.current is not None and not self.current.closed:
                return self.current
            await self._retire()
            if loop.time() < self._resting_until:
                return None
            conn = await self._connect()
            if conn is not None and not _can_take_over(conn):  # a kind of connection this never will take
                await self._pool.release(conn)
                self._resting_until = math.inf
                return None
            line = None if conn is None else _take_over(conn)
            if line is None:
                if conn is not None:
                    await self._pool.release(conn)
                # Redis is away or refused us: the adds of the next second go the ordinary way without first
                # paying a failed open each, which would double what an add costs through an outage.
                self._resting_until = loop.time() + _REST_AFTER_FAILED_OPEN_S
                return None
            self.current, self._conn = line, conn
            return line

    async def _connect(self) -> AbstractConnection | None:
        """A new connection, registered in the pool as in use, connected once; None when that fails.

        Never a pooled one as it is: one the server closed while it sat in the pool has stopped reading (asyncio's
        stream protocol keeps a half-closed socket), and an add written there would wait for the timeout.
        """
        try:
            conn: AbstractConnection = self._pool.get_available_connection()  # type: ignore[no-untyped-call]
        except RedisError:  # the pool's ceiling
            return None
        # One attempt, without the client's retries: the caller falls back to the ordinary path, which retries.
        # Through `connect` itself, which a Sentinel-managed connection overrides to ask for the master's address.
        retry, conn.retry = conn.retry, _ONE_ATTEMPT
        try:
            await conn.disconnect()
            await conn.connect()  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            await self._pool.release(conn)
            return None
        finally:
            conn.retry = retry
        return conn

    async def _retire(self) -> None:
        """Give a closed line's connection back to its pool, disconnected (the pool connects it again on use)."""
        conn, self._conn, self.current = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect(nowait=True)
            await self._pool.release(conn)


# The attribute of a client's pool that holds its line.
_POOL_ATTRIBUTE = "_slack_backend_add_line"


def _can_take_over(conn: AbstractConnection) -> bool:
    """Whether `conn` is of a kind whose transport a `_Replies` can take: asyncio streams over a transport with
    these methods (uvloop's transports do not derive from asyncio's classes)."""
    writer: Any = getattr(conn, "_writer", None)
    if not isinstance(writer, asyncio.StreamWriter):
        return False
    return all(hasattr(writer.transport, m) for m in ("set_protocol", "get_protocol", "write", "abort", "is_closing"))


def _take_over(conn: AbstractConnection) -> _Replies | None:
    """Move a connected redis-py connection's transport, of a kind `_can_take_over` accepts, to a `_Replies`; None
    if it is closed or holds bytes already.

    The connection stays in the pool's in-use set, so closing the client (which disconnects every connection of
    the pool) closes the line too.
    """
    writer: Any = getattr(conn, "_writer", None)
    reader: Any = getattr(conn, "_reader", None)
    transport = writer.transport
    if reader is None or reader._buffer or reader.at_eof() or transport.is_closing():
        return None
    encoder = conn.encoder
    kwargs: dict[str, Any] = {}
    if encoder.decode_responses:
        kwargs = {"encoding": encoder.encoding, "errors": encoder.encoding_errors}
    replies = _Replies(transport.get_protocol(), hiredis.Reader(**kwargs), conn.socket_timeout)
    transport.set_protocol(replies)
    replies.connection_made(transport)
    return replies
