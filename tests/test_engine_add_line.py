"""The one-by-one add's own connection (`queue/_add_line.py`), observed where its bytes travel: a proxy between the
queue and Redis counts its connections and loses, holds, drops or resets what it carries. Each test runs on
asyncio's loop and on uvloop (the service's), whose transports differ."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from slack_backend.queue import JobOptions, JobState, Queue, create_redis
from slack_backend.queue._add_line import AddLine
from slack_backend.queue._scripts import script_source
from slack_backend.queue.connection import RedisClient
from tests.support.engine import wait_until
from tests.support.fault_proxy import FaultProxy, evalsha_of
from tests.support.redis_server import RedisServer

ADD_SHA = hashlib.sha1(script_source("add").encode()).hexdigest()
Runner = Callable[[Coroutine[Any, Any, None]], None]
ON_EACH_LOOP = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
is_add = evalsha_of(ADD_SHA)


async def _waiting(queue: Queue) -> int:
    return (await queue.counts())[JobState.WAITING]


async def _queue_on(client: RedisClient, prefix: str) -> Queue:
    """A queue whose add script Redis already holds: on a new server the first add's NOSCRIPT closes the line."""
    await client.script_load(script_source("add"))
    return Queue("q", connection=client, prefix=prefix)


@contextlib.asynccontextmanager
async def _queue_through_proxy(
    redis_server: RedisServer, prefix: str, *, socket_timeout: float | None = None
) -> AsyncIterator[tuple[FaultProxy, Queue]]:
    """A proxy to the session's Redis and a queue whose client goes through it (the service's client, or one with
    `socket_timeout`), its first add made so the line is open; the client is closed after."""
    async with FaultProxy("127.0.0.1", redis_server.port) as proxy:
        client: RedisClient
        if socket_timeout is None:
            client = create_redis(proxy.url)
        else:
            client = Redis.from_url(proxy.url, socket_timeout=socket_timeout, decode_responses=True)
        try:
            queue = await _queue_on(client, prefix)
            await queue.add("warm", {})  # the line open
            yield proxy, queue
        finally:
            await client.aclose()


def _line(queue: Queue) -> AddLine:
    assert queue._add_line is not None
    return queue._add_line


@ON_EACH_LOOP
def test_adds_go_on_one_line_with_the_registered_script(run: Runner, redis_server: RedisServer, prefix: str) -> None:
    """The pre-packed EVALSHA names the script the queue registers (a mismatch would make every add a NOSCRIPT and
    a second send), and 100 adds one after another go on the open line, once each, never through the pool."""

    async def scenario() -> None:
        async with _queue_through_proxy(redis_server, prefix) as (proxy, queue):
            assert queue._scripts.wire("add")[0].encode() in _line(queue)._prefix
            connections, sent = proxy.connections, sum(1 for c in proxy.seen if is_add(c))
            line = _line(queue).current
            assert line is not None
            for i in range(100):
                assert (await queue.add("x", {"i": i})).created
            assert _line(queue).current is line
            assert not line.closed
            assert proxy.connections == connections  # the line's; the pool's were never needed
            assert sum(1 for c in proxy.seen if is_add(c)) == sent + 100  # each add sent once
            assert await _waiting(queue) == 101

    run(scenario())


@ON_EACH_LOOP
def test_concurrent_adds_share_one_connection_and_each_gets_its_own_reply(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """200 adds at once travel on the one line (redis-py's pool would open a connection per add in flight); each
    add is answered with its own job id, and Redis holds each job once, with its own data."""

    async def scenario() -> None:
        async with _queue_through_proxy(redis_server, prefix) as (proxy, queue):
            before = proxy.connections
            results = await asyncio.gather(*(queue.add("x", {"i": i}, job_id=f"j{i}") for i in range(200)))
            assert [r.job_id for r in results] == [f"j{i}" for i in range(200)]
            assert all(r.created for r in results)
            assert proxy.connections == before
            for i in (0, 99, 199):
                job = await queue.get(f"j{i}")
                assert job is not None
                assert job.data == {"i": i}
            assert await _waiting(queue) == 201

    run(scenario())


@ON_EACH_LOOP
def test_queues_made_one_per_request_share_their_clients_one_line(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """A program that makes a Queue object per request (and lets it go) still holds one line per client: 50 queues
    on one client, one add each, open no connection past the first line."""

    async def scenario() -> None:
        async with _queue_through_proxy(redis_server, prefix) as (proxy, first):
            connections = proxy.connections
            for i in range(50):
                queue = Queue(f"q{i}", connection=first.redis, prefix=prefix)
                assert (await queue.add("x", {"i": i})).created
                assert _line(queue).current is _line(first).current
            assert proxy.connections == connections

    run(scenario())


@ON_EACH_LOOP
def test_an_add_whose_reply_is_lost_is_sent_again_and_makes_one_job(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """Redis runs the add but the reply never comes (the proxy cuts the connection): the add goes again through the
    ordinary path, which finds the job; the line reopens for the next add. One job per add, exact counts."""

    async def scenario() -> None:
        async with _queue_through_proxy(redis_server, prefix) as (proxy, queue):
            proxy.lose_reply(is_add)
            assert (await queue.add("x", {"n": 1}, job_id="lost")).job_id == "lost"
            assert (await queue.add("x", {"n": 2}, job_id="after")).created
            assert await _waiting(queue) == 3
            job = await queue.get("lost")
            assert job is not None
            assert job.data == {"n": 1}
            assert sum(1 for c in proxy.seen if is_add(c) and b"lost" in c[-1]) == 2  # sent, then sent again

    run(scenario())


@ON_EACH_LOOP
def test_adds_in_flight_when_the_connection_resets_are_each_made_once(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """50 adds written and the connection reset under them (RST) before Redis saw them: every add is answered with
    its own id through the ordinary path, and each job is in Redis once."""

    async def scenario() -> None:
        async with _queue_through_proxy(redis_server, prefix) as (proxy, queue):
            proxy.delay_s = 0.3  # the adds wait in the proxy, written but not yet run
            sent = sum(1 for c in proxy.seen if is_add(c))
            adds = [asyncio.create_task(queue.add("x", {"i": i}, job_id=f"j{i}")) for i in range(50)]

            async def all_held() -> bool:  # the proxy has read all 50 and holds them for its delay
                return sum(1 for c in proxy.seen if is_add(c)) == sent + 50

            await wait_until(all_held, timeout_s=5, every_s=0.005)
            proxy.reset()
            proxy.delay_s = 0.0
            results = await asyncio.gather(*adds)
            assert [r.job_id for r in results] == [f"j{i}" for i in range(50)]
            assert await _waiting(queue) == 51

    run(scenario())


@ON_EACH_LOOP
def test_a_line_that_answers_nothing_for_the_socket_timeout_hands_its_adds_on(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """The proxy drops every byte (a partition): the line gives up after the client's socket timeout and hands the
    add back (None: send it the ordinary way) instead of waiting for TCP's own patience; then a new line works."""

    async def scenario() -> None:
        async with _queue_through_proxy(redis_server, prefix, socket_timeout=0.5) as (proxy, queue):
            proxy.blackhole()
            started = time.monotonic()
            spec = queue._spec("x", {}, JobOptions(job_id="held"))
            reply = await asyncio.wait_for(_line(queue).add(spec), timeout=10)
            waited = time.monotonic() - started
            assert reply is None
            assert 0.5 <= waited < 3.0  # one timeout, at most two (the watchdog is armed per line, not per add)
            proxy.heal()
            assert (await queue.add("x", {}, job_id="after")).created
            assert await _waiting(queue) == 2  # "held" was dropped by the partition, never run

    run(scenario())


@ON_EACH_LOOP
def test_an_add_cancelled_while_its_reply_is_on_the_way_does_not_answer_the_next_add(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """A cancel between the send and the reply (an ingress request that gave up): the request was written, so Redis
    runs it once; its reply is read and dropped in its turn, and the next add gets its own."""

    async def scenario() -> None:
        client = create_redis(redis_server.url)
        queue = await _queue_on(client, prefix)
        await queue.add("warm", {})  # the script is loaded and the line open
        # WRITE mode: scripts that write wait, unanswered, until the unpause below (the pause's own end is far off,
        # so a slow host cannot let the add finish before it is cancelled).
        await client.client_pause(10_000, all=False)
        try:
            first = asyncio.create_task(queue.add("x", {"n": 1}, job_id="first"))
            await asyncio.sleep(0.1)  # the task runs and writes its request at its first step
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
        finally:
            await client.client_unpause()
        second = await queue.add("x", {"n": 2}, job_id="second")
        assert (second.job_id, second.created) == ("second", True)
        for job_id, data in (("second", {"n": 2}), ("first", {"n": 1})):
            job = await queue.get(job_id)
            assert job is not None
            assert job.data == data
        assert await _waiting(queue) == 3
        await client.aclose()

    run(scenario())


@ON_EACH_LOOP
def test_closing_the_client_closes_the_line(run: Runner, redis_server: RedisServer, prefix: str) -> None:
    """The line's connection stays in the client's pool as in use, so the client's close ends it too, promptly
    (redis-py waits for each connection to close), and no transport is left open (warnings are errors here)."""

    async def scenario() -> None:
        client = create_redis(redis_server.url)
        queue = await _queue_on(client, prefix)
        await queue.add("x", {})
        line = _line(queue).current
        assert line is not None
        assert not line.closed
        await asyncio.wait_for(client.aclose(), timeout=3)
        assert line.closed

    run(scenario())


@ON_EACH_LOOP
def test_an_error_reply_closes_the_line_and_the_ordinary_path_raises_it(
    run: Runner, redis_server: RedisServer, prefix: str
) -> None:
    """A key of the wrong type makes the script fail: the add raises Redis's error (from the ordinary path, which
    sends it again), and once the key is right the next add opens a new line and succeeds."""

    async def scenario() -> None:
        client = create_redis(redis_server.url)
        queue = await _queue_on(client, prefix)
        await queue.add("warm", {})
        first_line = _line(queue).current
        assert first_line is not None
        jobs_key = queue.keys.key("jobs")
        await client.rename(jobs_key, f"{jobs_key}:aside")
        await client.set(jobs_key, "not a hash")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await queue.add("x", {})
        assert first_line.closed
        await client.delete(jobs_key)
        await client.rename(f"{jobs_key}:aside", jobs_key)
        assert (await queue.add("x", {}, job_id="after")).created
        assert _line(queue).current is not first_line
        await client.aclose()

    run(scenario())


@ON_EACH_LOOP
def test_after_redis_restarts_the_line_is_a_new_connection_not_a_pooled_one_it_closed(
    run: Runner, tmp_path: Path, prefix: str
) -> None:
    """Redis restarted under idle pooled connections (it closed them; asyncio's stream protocol keeps such a socket
    half-open and stops reading). While Redis is away an add fails at once with a connection error, and the first
    add after the restart is answered at once: a line taken over from one of those connections would wait for the
    whole socket timeout (15 s) with its add written into a dead socket."""

    async def scenario() -> None:
        server = RedisServer(tmp_path)
        server.start()
        client = create_redis(server.url)
        try:
            queue = await _queue_on(client, prefix)
            await asyncio.gather(*(queue.counts() for _ in range(5)))  # idle connections in the pool
            await asyncio.to_thread(server.stop)
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(RedisConnectionError):
                    await asyncio.wait_for(queue.add("x", {}), timeout=30)
                took = time.monotonic() - started
                assert took < 5.0, f"an add with Redis away took {took:.1f} s to fail"
            await asyncio.to_thread(server.start)
            await client.script_load(script_source("add"))
            await asyncio.sleep(1.0)  # past the rest after the failed open: the next add opens a line
            started = time.monotonic()
            added = await asyncio.wait_for(queue.add("x", {}, job_id="after-restart"), timeout=30)
            took = time.monotonic() - started
            assert added.created
            assert took < 5.0, f"the first add after the restart took {took:.1f} s"
            assert _line(queue).current is not None
            assert await _waiting(queue) == 1
        finally:
            await client.aclose()
            server.stop()

    run(scenario())
