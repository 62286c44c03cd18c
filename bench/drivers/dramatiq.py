"""Dramatiq with its Redis broker as a benchmark driver: sync sends, a thread-pool Worker, default middleware."""

from __future__ import annotations

from typing import Any

from bench.drivers._peer import forever, load, versions
from bench.harness import Driver, Probe, main


def _noop_stub(payload: dict[str, Any]) -> None:
    """The producer's handle on the actor; only the worker's declaration runs."""


def _actor(fn: Any, broker: Any, queue: str) -> Any:
    return load("dramatiq").actor(fn, actor_name="noop", queue_name=queue, broker=broker, max_retries=0)


class _Enqueuer:
    def __init__(self, url: str, queue: str) -> None:
        self.broker = load("dramatiq.brokers.redis").RedisBroker(url=url)
        self.actor = _actor(_noop_stub, self.broker, queue)

    async def one(self, data: dict[str, Any]) -> None:
        # Dramatiq's send is synchronous; the producer waits for it like any blocking client.
        self.actor.send(data)

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        # No bulk API: one send after another (the research anchors' "one-by-one call").
        for data in datas:
            self.actor.send(data)

    async def close(self) -> None:
        self.broker.close()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    return _Enqueuer(url, queue)


async def run_worker(url: str, queue: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    def noop(payload: dict[str, Any]) -> None:
        probe.start(payload)
        probe.finish()

    broker = load("dramatiq.brokers.redis").RedisBroker(url=url)
    _actor(noop, broker, queue)
    worker = load("dramatiq").Worker(broker, worker_threads=concurrency)
    worker.start()
    await forever()


DRIVER = Driver(
    name="dramatiq",
    module="bench.drivers.dramatiq",
    version=versions("dramatiq", "redis"),
    fast_method="one-by-one send (no bulk API)",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
)

if __name__ == "__main__":
    main(DRIVER)
