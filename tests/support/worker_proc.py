"""A worker process for engine tests: `python -m tests.support.worker_proc '<json config>'`.

Each run appends {id, worker, start_ms, end_ms, entered_ms, overlap} to the Redis list `<tag>:test:runs`; `overlap`
is true when another live run of the same job held the job's marker (two owners at once). `entered_ms` is the
machine's monotonic clock (shared by every process on it) read first thing at processor entry, in float ms: the
moment the work reaches whoever receives it, which limit tests count on.

Optional keys beyond the basics: `max_stalls` (default 1), `marker_ms` (the marker's lifetime, default lease_ms:
keep it below the lease so a killed owner's marker is gone before its job can be recovered), `result_worker` (the
result names the worker that wrote it) and `idle_block_s` (default 5). `sentinels` (a list of [host, port]) with
`sentinel_master`, or `cluster_nodes`, reach Redis through Sentinel or a Cluster instead of `url`; `runs_file` appends
each run as a JSON line to that file instead of Redis (a record that a failover or a partition cannot lose) and
skips the marker; a run takes the job's `ms` when its data gives one, else `job_ms`, and a run stopped half-way is
recorded with `finished` false.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from slack_backend.logging import configure_logging
from slack_backend.queue import Job, KeepJobs, QueueLimits, RateLimit, RedisTarget, Worker, create_redis
from slack_backend.queue.queue import Queue
from slack_backend.queue.runner import run_until_signalled


async def main(cfg: dict[str, Any]) -> None:
    target = RedisTarget(
        url=cfg.get("url", "redis://127.0.0.1:6379/0"),
        sentinels=tuple((h, int(p)) for h, p in cfg.get("sentinels", ())),
        sentinel_master=cfg.get("sentinel_master", "mymaster"),
        cluster_nodes=tuple((h, int(p)) for h, p in cfg.get("cluster_nodes", ())),
    )
    client = create_redis(target)
    runs_file = cfg.get("runs_file")
    # One unbuffered append per run: a line is on disk the moment the run ends, whatever kills the process after.
    runs_fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if runs_file else -1
    queue = Queue(cfg.get("queue", "q"), connection=client, prefix=cfg["prefix"])
    runs_key = f"{queue.keys.tag}:test:runs"
    fail_rate = float(cfg.get("fail_rate", 0.0))

    async def processor(job: Job) -> dict[str, Any]:
        entered_ms = time.monotonic() * 1000
        start_ms = int(time.time() * 1000)
        if runs_fd >= 0:
            finished = False
            try:
                await asyncio.sleep(_job_ms(job, cfg) / 1000)
                finished = True
            finally:
                # A run stopped half-way (its lease lost) is recorded too, with `finished` false.
                run = {"id": job.id, "start_ms": start_ms, "end_ms": int(time.time() * 1000), "finished": finished}
                os.write(runs_fd, (json.dumps(run) + "\n").encode())
            return {"ok": True, "worker": worker.id} if cfg.get("result_worker") else {"ok": True}
        marker = f"{queue.keys.tag}:test:marker:{job.id}"
        # Ownership lasts as long as a lease: a killed worker's marker expires when its lease would.
        marker_ms = int(cfg.get("marker_ms", cfg.get("lease_ms", 30_000)))
        owned = await client.set(marker, worker.id, nx=True, px=marker_ms)
        ms = float(job.data.get("ms", 0)) if isinstance(job.data, dict) else 0.0
        ms = float(cfg.get("job_ms", ms))
        try:
            if ms:
                await asyncio.sleep(ms / 1000)
            if fail_rate and random.random() < fail_rate:
                raise RuntimeError("random failure")
        finally:
            if owned:
                await client.delete(marker)
            run = {
                "id": job.id,
                "group": job.group,
                "worker": worker.id,
                "start_ms": start_ms,
                "end_ms": int(time.time() * 1000),
                "entered_ms": entered_ms,
                "overlap": not owned,
            }
            await client.rpush(runs_key, json.dumps(run))
        if cfg.get("result_worker"):
            return {"ok": True, "worker": worker.id}
        return {"ok": True}

    limit = cfg.get("rate")
    limits = None
    if limit or cfg.get("group_concurrency"):
        limits = QueueLimits(
            rate=RateLimit(limit[0], limit[1]) if limit else None,
            group_concurrency=cfg.get("group_concurrency"),
        )
    worker = Worker(
        queue,
        processor,
        concurrency=int(cfg.get("concurrency", 5)),
        limits=limits,
        lease_ms=int(cfg.get("lease_ms", 30_000)),
        stalled_interval_ms=int(cfg.get("stalled_ms", 5_000)),
        keep_completed=KeepJobs(count=None),
        keep_failed=KeepJobs(count=None),
        max_stalls=int(cfg.get("max_stalls", 1)),
        idle_block_s=float(cfg.get("idle_block_s", 5.0)),
    )
    try:
        await run_until_signalled([worker], shutdown_timeout_s=cfg.get("shutdown_timeout_s"))
    finally:
        await client.aclose()


def _job_ms(job: Job, cfg: dict[str, Any]) -> float:
    """How long a run takes: the job's own `ms` when its data gives one, else the configured `job_ms`."""
    if isinstance(job.data, dict) and "ms" in job.data:
        return float(job.data["ms"])
    return float(cfg.get("job_ms", 0))


if __name__ == "__main__":
    configure_logging("INFO", "json")
    asyncio.run(main(json.loads(sys.argv[1])))
