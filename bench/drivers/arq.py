"""arq as a benchmark driver, polling every 10 ms (its default 0.5 s poll caps it near 200 jobs/s)."""

from __future__ import annotations

from typing import Any

from bench.drivers._peer import in_flight, load, versions
from bench.harness import Driver, Probe, main

POLL_DELAY_S = 0.01


class _Enqueuer:
    def __init__(self, pool: Any, queue: str) -> None:
        self.pool = pool
        self.queue = queue

    async def one(self, data: dict[str, Any]) -> None:
        await self.pool.enqueue_job("noop", data, _queue_name=self.queue)

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        await in_flight(datas, self.one)

    async def close(self) -> None:
        await self.pool.aclose()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    settings = load("arq.connections").RedisSettings.from_dsn(url)
    return _Enqueuer(await load("arq").create_pool(settings, default_queue_name=queue), queue)


async def run_worker(url: str, queue: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    async def noop(ctx: Any, payload: dict[str, Any]) -> None:
        probe.start(payload)
        probe.finish()

    arq_worker = load("arq.worker")
    worker = arq_worker.Worker(
        functions=[arq_worker.func(noop, name="noop")],
        queue_name=queue,
        redis_settings=load("arq.connections").RedisSettings.from_dsn(url),
        max_jobs=concurrency,
        poll_delay=POLL_DELAY_S,
        handle_signals=False,
    )
    await worker.async_run()


DRIVER = Driver(
    name="arq",
    module="bench.drivers.arq",
    version=versions("arq", "redis"),
    fast_method="asyncio.gather, 100 in flight",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
)

if __name__ == "__main__":
    main(DRIVER)
