"""Our engine (slack_backend.queue) as a benchmark driver: Queue.add / add_bulk and one Worker per process."""

from __future__ import annotations

import os
from importlib.metadata import version
from typing import Any

from bench.drivers._peer import reply_parser
from bench.harness import Driver, Probe, main
from slack_backend.cli_service import run_event_loop
from slack_backend.logging import configure_logging
from slack_backend.queue import BulkJob, Job, Queue, QueueLimits, RateLimit, Worker, create_redis

PREFIX = "bench"
JOB_NAME = "slack-request"


class _Enqueuer:
    def __init__(self, url: str, queue: str) -> None:
        self.client = create_redis(url)
        self.queue = Queue(queue, connection=self.client, prefix=PREFIX)

    async def one(self, data: dict[str, Any]) -> None:
        await self.queue.add(JOB_NAME, data)

    async def fast(self, datas: list[dict[str, Any]]) -> None:
        await self.queue.add_bulk([BulkJob(JOB_NAME, d) for d in datas])

    async def close(self) -> None:
        await self.client.aclose()


async def open_enqueuer(url: str, queue: str) -> _Enqueuer:
    return _Enqueuer(url, queue)


def log_to_null(level: str) -> None:
    # Rendered but thrown away: WARNING measures the engine alone, INFO what production pays for its job lines.
    # Line-buffered, as standard error (production's log stream) is.
    configure_logging(level, "json", stream=open(os.devnull, "w", buffering=1))  # noqa: SIM115 - lives as long as the process


async def run_worker(url: str, queue_name: str, concurrency: int, probe: Probe, options: dict[str, Any]) -> None:
    """Run one Worker with default retention (keep 100 completed); options: log_level, rate [max, duration_ms]."""
    log_to_null(str(options.get("log_level", "WARNING")))
    client = create_redis(url)
    queue = Queue(queue_name, connection=client, prefix=PREFIX)
    rate = options.get("rate")
    limits = QueueLimits(rate=RateLimit(int(rate[0]), int(rate[1]))) if rate else None

    async def processor(job: Job) -> None:
        probe.start(job.data, job.processed_ms)
        probe.finish()

    worker = Worker(queue, processor, concurrency=concurrency, limits=limits)
    try:
        await worker.run()
    finally:
        await client.aclose()


DRIVER = Driver(
    name="ours",
    module="bench.drivers.ours",
    version=lambda: f"slack-backend {version('slack-backend')} redis {version('redis')}, {reply_parser()}, uvloop",
    fast_method="Queue.add_bulk(10k) (atomic script calls of 1,000)",
    open_enqueuer=open_enqueuer,
    run_worker=run_worker,
    run_loop=run_event_loop,
)

if __name__ == "__main__":
    main(DRIVER)
