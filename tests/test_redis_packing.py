"""Commands packed by hiredis: the same bytes redis-py would send, and redis-py's own errors for bad arguments."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import DataError

from slack_backend.queue import create_redis
from slack_backend.queue._packing import packing_class

ARGUMENTS: list[tuple[object, ...]] = [
    ("SET", "k", "v"),
    ("SET", "k", 1.5),
    ("SET", "k", 0.1),
    ("SET", "k", 1e20),
    ("SET", "k", float("inf")),
    ("SET", "k", -3),
    ("SET", "k", 2**70),
    ("SET", "ké", "é\u2603\U0001f600"),
    ("SET", b"k", b"\x00\xff\r\n"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", ""),
    ("SET", "k", "x" * 200_000),  # past redis-py's buffer cut-off, where it sends the value as its own chunk
    ("EVALSHA", "a" * 40, 2, "{q}:a", "{q}:b", 100, 0, "worker-1", "0000000000000012"),
]


@pytest.mark.parametrize("args", ARGUMENTS, ids=range(len(ARGUMENTS)))
def test_the_bytes_are_redis_pys(args: tuple[object, ...]) -> None:
    ours = packing_class(Connection)()
    theirs = Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))  # type: ignore[arg-type]


def test_a_class_is_made_once_per_base_and_never_wrapped_twice() -> None:
    made = packing_class(Connection)
    assert packing_class(Connection) is made
    assert packing_class(made) is made
    assert issubclass(made, Connection)
    assert made.pack_command is not AbstractConnection.pack_command


async def test_the_client_packs_in_c_and_keeps_redis_pys_answers(redis_url: str, prefix: str) -> None:
    client = create_redis(redis_url)
    try:
        assert getattr(client.connection_pool.connection_class, "_packs_in_c", False)  # type: ignore[union-attr]
        await client.set(f"{prefix}:k", "é" * 3)
        assert await client.get(f"{prefix}:k") == "é" * 3
        # A command name of two words is split into two arguments, as redis-py does.
        assert await client.execute_command("CONFIG GET", "maxmemory-policy") is not None
        # What redis-py refuses is refused with its own error, before anything is sent.
        bad_values: tuple[Any, ...] = (True, None, [1])
        for bad in bad_values:
            with pytest.raises(DataError):
                await client.set(f"{prefix}:bad", bad)
        assert await client.exists(f"{prefix}:bad") == 0
    finally:
        await client.delete(f"{prefix}:k")
        await client.aclose()
