"""Redis memory while a long stream of jobs flows through one worker with the default retention."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.drivers.ours import JOB_NAME, PREFIX
from bench.harness import WorkerProcess, payload
from slack_backend.queue import BulkJob, Queue, create_redis

QUEUE = "memory"
# The backlog is topped up in small batches around a fixed level, so the waiting jobs' own memory stays nearly
# constant and any growth left in the samples is the engine's (retained jobs, events, bookkeeping).
BATCH = 100
LOW_WATER = 500
SAMPLE_EVERY_S = 0.5
FLAT_WITHIN = 1.10


async def run_memory(url: str, log_dir: Path, *, total: int, concurrency: int = 50) -> dict[str, Any]:
    """Feed `total` jobs to one worker process and sample used_memory until the last batch is in."""
    client = create_redis(url)
    queue = Queue(QUEUE, connection=client, prefix=PREFIX)
    cfg = {"url": url, "queue": QUEUE, "n": total, "concurrency": concurrency, "timeout_s": 60 + total / 200}
    worker = await WorkerProcess.spawn("bench.drivers.ours", cfg, log_path=log_dir / "memory-worker.log")
    samples: list[tuple[float, int, int]] = []
    try:
        await worker.ready(timeout_s=30)
        t0 = time.monotonic()
        next_sample = t0
        added = 0
        while added < total:
            waiting = int(await client.zcard(queue.keys.key("wait")))
            now = time.monotonic()
            if now >= next_sample:
                used = int((await client.info("memory"))["used_memory"])
                samples.append((round(now - t0, 2), used, waiting))
                next_sample += SAMPLE_EVERY_S
            if waiting < LOW_WATER:
                batch = min(BATCH, total - added)
                await queue.add_bulk([BulkJob(JOB_NAME, payload(added + i)) for i in range(batch)])
                added += batch
            else:
                await asyncio.sleep(0.005)
        result = await worker.result(timeout_s=60 + total / 200)
    finally:
        await worker.stop()
        await queue.obliterate()
        await client.aclose()
    if "error" in result:
        raise RuntimeError(f"memory worker failed: {result['error']}")
    last_half = [used for _, used, _ in samples[len(samples) // 2 :]]
    ratio = max(last_half) / min(last_half) if last_half else float("nan")
    return {
        "jobs": total,
        "concurrency": concurrency,
        "worker_per_s": result.get("per_s"),
        "samples": samples,
        "last_half_max_over_min": ratio,
        "flat": ratio <= FLAT_WITHIN,
        "last_half_mb": [round(min(last_half) / 2**20, 2), round(max(last_half) / 2**20, 2)] if last_half else [],
    }
