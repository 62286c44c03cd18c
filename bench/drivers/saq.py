"""SAQ (Redis queue) as a benchmark driver, with its default options."""

from __future__ import annotations

from typing import Any

from bench.drivers._peer import in_flight, load, versions
from bench.harness import Driver, Probe, main


class _Enqueuer:
    def __init__(self, url: str, queue: str) -> None:
        self.queue = load("saq").Queue.from_url(url, name=queue)

    async def one(self, data: dict[str, Any]) -> None:
        await self.queue.enqueue("noop", payload=data)

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        await in_flight(datas, self.one)

    async def close(self) -> None:
        await self.queue.disconnect()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    enq = _Enqueuer(url, queue)
    await enq.queue.connect()
    return enq


async def run_worker(url: str, queue_name: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    saq = load("saq")

    async def noop(ctx: Any, *, payload: dict[str, Any]) -> None:
        probe.start(payload)
        probe.finish()

    queue = saq.Queue.from_url(url, name=queue_name)
    await queue.connect()
    worker = saq.Worker(queue, functions=[("noop", noop)], concurrency=concurrency)
    await worker.start()


DRIVER = Driver(
    name="saq",
    module="bench.drivers.saq",
    version=versions("saq", "redis"),
    fast_method="asyncio.gather, 100 in flight",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
)

if __name__ == "__main__":
    main(DRIVER)
