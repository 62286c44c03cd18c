"""Group cost: the fetch script's latency with 10,000 groups holding waiting jobs against one group."""

from __future__ import annotations

import time
from typing import Any

from bench.drivers.ours import JOB_NAME, PREFIX
from bench.harness import payload
from bench.stats import percentile
from slack_backend.queue import BulkJob, JobOptions, Queue, create_redis

BLOCK = 100
WORKER_ID = "bench-groups"
LEASE_MS = 30_000


async def run_groups(url: str, *, groups: int = 10_000, per_group: int = 2, fetches: int = 2_000) -> dict[str, Any]:
    """Time `fetches` single-job fetches on each queue, alternating blocks of 100 so drift hits both alike."""
    client = create_redis(url)
    many = Queue("groups-many", connection=client, prefix=PREFIX)
    one = Queue("groups-one", connection=client, prefix=PREFIX)
    try:
        jobs = groups * per_group
        await many.add_bulk(
            [BulkJob(JOB_NAME, payload(i), JobOptions(group=f"T{i % groups:07d}")) for i in range(jobs)]
        )
        await one.add_bulk([BulkJob(JOB_NAME, payload(i), JobOptions(group="T0000000")) for i in range(jobs)])
        times: dict[str, list[float]] = {"many": [], "one": []}
        for _ in range(0, fetches, BLOCK):
            for label, queue in (("many", many), ("one", one)):
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    reply = await queue.call("fetch", WORKER_ID, LEASE_MS, 1)
                    times[label].append(time.perf_counter() - t0)
                    if int(reply[0]) != 0:
                        raise RuntimeError(f"fetch on {label} started nothing (status {reply[0]})")
    finally:
        await many.obliterate()
        await one.obliterate()
        await client.aclose()
    out: dict[str, Any] = {"groups": groups, "per_group": per_group, "fetches": fetches}
    for label, values in times.items():
        out[f"{label}_mean_us"] = sum(values) / len(values) * 1e6
        out[f"{label}_p50_us"] = percentile(values, 50) * 1e6
        out[f"{label}_p99_us"] = percentile(values, 99) * 1e6
    out["ratio_mean"] = out["many_mean_us"] / out["one_mean_us"]
    out["ratio_p50"] = out["many_p50_us"] / out["one_p50_us"]
    return out
