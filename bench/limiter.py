"""The global rate limit under contention: several worker processes drain a backlog under one limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.drivers.ours import JOB_NAME, PREFIX
from bench.harness import WorkerProcess, payload
from bench.stats import max_in_window, per_second
from slack_backend.queue import BulkJob, JobState, Queue, QueueLimits, RateLimit, create_redis

QUEUE = "limiter"


async def run_limiter(
    url: str, log_dir: Path, *, backlog: int, processes: int = 3, limit: int = 10, window_ms: int = 1000
) -> dict[str, Any]:
    """Start `processes` workers on a backlog under `limit` starts per `window_ms`; record every start.

    Start times come from both clocks: the engine's (the Redis TIME stamp fetch.lua gives each start, which is the
    clock the limiter keeps) and each worker's, on processor entry (what an upstream API would see).
    """
    client = create_redis(url)
    queue = Queue(QUEUE, connection=client, prefix=PREFIX)
    workers: list[WorkerProcess] = []
    try:
        await queue.set_limits(QueueLimits(rate=RateLimit(limit, window_ms)))
        await queue.add_bulk([BulkJob(JOB_NAME, payload(i)) for i in range(backlog)])
        cfg = {
            "url": url,
            "queue": QUEUE,
            "n": 0,
            "concurrency": 5,
            "record_starts": True,
            "options": {"rate": [limit, window_ms]},
        }
        for i in range(processes):
            workers.append(await WorkerProcess.spawn("bench.drivers.ours", cfg, log_path=log_dir / f"limiter-{i}.log"))
        for worker in workers:
            await worker.ready(timeout_s=30)
        deadline = time.monotonic() + backlog * window_ms / 1000 / limit + 30
        # Drained when nothing waits or runs (the completed set is trimmed to 100, so it cannot be counted on).
        while await _unfinished(queue):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the backlog of {backlog} did not finish in time")
            await asyncio.sleep(0.25)
        for worker in workers:
            await worker.terminate()
        results = [await worker.result(timeout_s=15) for worker in workers]
    finally:
        for worker in workers:
            await worker.stop()
        await queue.obliterate()
        await client.aclose()
    failures = [r["error"] for r in results if "error" in r]
    if failures:
        raise RuntimeError(f"limiter worker failed: {failures[0]}")
    engine_s = sorted(ms / 1000 for r in results for ms in r["engine_start_ms"])
    worker_s = sorted(t for r in results for t in r["start_times"])
    window_s = window_ms / 1000
    span = engine_s[-1] - engine_s[0]
    return {
        "processes": processes,
        "limit": limit,
        "window_ms": window_ms,
        "jobs": len(engine_s),
        "per_worker": [len(r["engine_start_ms"]) for r in results],
        "starts_per_second": per_second(engine_s),
        "max_in_sliding_window_engine_clock": max_in_window(engine_s, window_s),
        "max_in_sliding_window_worker_clock": max_in_window(worker_s, window_s),
        # Each start holds its slot for a whole window, so n starts occupy (last - first) + one window.
        "mean_per_s": len(engine_s) / (span + window_s),
        "span_s": span,
    }


async def _unfinished(queue: Queue) -> int:
    counts = await queue.counts()
    return counts[JobState.WAITING] + counts[JobState.ACTIVE] + counts[JobState.DELAYED]
