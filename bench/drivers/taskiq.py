"""taskiq with taskiq-redis's RedisStreamBroker (acknowledged delivery) as a benchmark driver."""

from __future__ import annotations

from typing import Any

from bench.drivers._peer import in_flight, load, versions
from bench.harness import Driver, Probe, main


async def _noop_stub(payload: dict[str, Any]) -> None:
    """The producer's handle on the task; only the worker's registration runs."""


class _Enqueuer:
    def __init__(self, url: str, queue: str) -> None:
        self.broker = load("taskiq_redis").RedisStreamBroker(url, queue_name=queue)
        self.task = self.broker.register_task(_noop_stub, task_name="noop")

    async def one(self, data: dict[str, Any]) -> None:
        await self.task.kiq(data)

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        await in_flight(datas, self.one)

    async def close(self) -> None:
        await self.broker.shutdown()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    enq = _Enqueuer(url, queue)
    # Declares the consumer group, which reads from "$": messages added before it exists would be skipped.
    await enq.broker.startup()
    return enq


async def run_worker(url: str, queue: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    async def noop(payload: dict[str, Any]) -> None:
        probe.start(payload)
        probe.finish()

    broker = load("taskiq_redis").RedisStreamBroker(url, queue_name=queue)
    broker.register_task(noop, task_name="noop")
    await broker.startup()
    await load("taskiq.api").run_receiver_task(broker, max_async_tasks=concurrency)


DRIVER = Driver(
    name="taskiq-redis",
    module="bench.drivers.taskiq",
    version=versions("taskiq", "taskiq-redis", "redis"),
    fast_method="asyncio.gather, 100 in flight",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
)

if __name__ == "__main__":
    main(DRIVER)
