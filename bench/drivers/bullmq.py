"""BullMQ for Python (the `bullmq` package) as a benchmark driver, with its default options."""

from __future__ import annotations

from typing import Any

from bench.drivers._peer import forever, load, versions
from bench.harness import Driver, Probe, main


class _Enqueuer:
    def __init__(self, url: str, queue: str) -> None:
        self.queue = load("bullmq").Queue(queue, {"connection": url})

    async def one(self, data: dict[str, Any]) -> None:
        await self.queue.add("noop", data)

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        await self.queue.addBulk([{"name": "noop", "data": d} for d in datas])

    async def close(self) -> None:
        await self.queue.close()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    return _Enqueuer(url, queue)


async def run_worker(url: str, queue: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    async def process(job: Any, token: str) -> None:
        probe.start(job.data)
        probe.finish()

    # The Worker starts itself (autorun) on its own tasks.
    worker = load("bullmq").Worker(queue, process, {"connection": url, "concurrency": concurrency})
    try:
        await forever()
    finally:
        await worker.close()


DRIVER = Driver(
    name="bullmq",
    module="bench.drivers.bullmq",
    version=versions("bullmq", "redis"),
    fast_method="Queue.addBulk(10k) (one MULTI pipeline)",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
)

if __name__ == "__main__":
    main(DRIVER)
