"""The floor under every Redis queue: redis-py LPUSH to enqueue and BRPOP to take, nothing else."""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from typing import Any

from redis.asyncio import Redis

from bench.drivers._peer import reply_parser
from bench.harness import Driver, Probe, main


class _Enqueuer:
    def __init__(self, url: str, queue: str) -> None:
        self.client = Redis.from_url(url)
        self.key = f"raw:{queue}"

    async def one(self, data: dict[str, Any]) -> None:
        await self.client.lpush(self.key, json.dumps(data))

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for data in datas:
                pipe.lpush(self.key, json.dumps(data))
            await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    return _Enqueuer(url, queue)


async def run_worker(url: str, queue: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    """`concurrency` loops, each BRPOP -> processor -> BRPOP on its own pooled connection."""
    client = Redis.from_url(url, max_connections=concurrency + 1)
    key = f"raw:{queue}"

    async def loop() -> None:
        while True:
            item = await client.brpop([key], timeout=1)
            if item is not None:
                probe.start(json.loads(item[1]))
                probe.finish()

    await asyncio.gather(*(loop() for _ in range(concurrency)))


DRIVER = Driver(
    name="raw-redis-py",
    module="bench.drivers.raw",
    version=lambda: f"redis-py {version('redis')}, {reply_parser()}",
    fast_method="one pipeline (transaction=False) of LPUSH",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
)

if __name__ == "__main__":
    main(DRIVER)
