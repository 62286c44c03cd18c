"""Redis Cluster: the engine's lifecycle on a real 3-master, 3-replica cluster, and a failover of the queue's shard."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from slack_backend.config import load_settings
from slack_backend.queue import (
    Backoff,
    Job,
    JobEvent,
    JobState,
    Queue,
    QueueLimits,
    RateLimit,
    Worker,
    create_redis,
    server_safety,
)
from tests.support.sentinel_cluster import RedisClusterSet, failover_under_load

# The slow tests' offered adds/s: 200 by default (the shared 2-core machine), FAILOVER_ADDS_PER_S to change it.
SLOW_RATE = int(os.environ.get("FAILOVER_ADDS_PER_S", "200"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    """Six redis-servers joined as a cluster on loopback ports; every process is stopped after the test."""
    nodes = RedisClusterSet(tmp_path / "cluster")
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


async def test_settings_give_a_cluster_client(cluster: RedisClusterSet) -> None:
    """REDIS_CLUSTER_NODES, and a redis+cluster:// REDIS_URL, both give a RedisCluster that reaches every shard."""
    hosts = ",".join(f"{h}:{p}" for h, p in cluster.addresses()[:2])
    for env in ({"REDIS_CLUSTER_NODES": hosts}, {"REDIS_URL": f"redis+cluster://{hosts}"}):
        client = create_redis(load_settings(env).redis_target())
        try:
            assert isinstance(client, RedisCluster)
            for i in range(20):  # keys spread over all three shards
                await client.set(f"probe{i}", str(i))
            assert len({client.get_node_from_key(f"probe{i}").name for i in range(20)}) == 3  # type: ignore[union-attr]
            # CONFIG GET asks every primary: the launcher's nodes keep no AOF and no RDB saves.
            safety = await server_safety(client)
            assert (safety.maxmemory_policy, safety.aof, safety.rdb_saves) == ("noeviction", False, False)
        finally:
            await client.aclose()


async def test_core_lifecycle_through_a_worker_on_a_cluster(cluster: RedisClusterSet) -> None:
    """Add, blocking fetch, complete, retry with backoff, the rate limit and group caps all work on a cluster."""
    client = create_redis(cluster.target())
    assert isinstance(client, RedisCluster)
    queue = Queue("q", connection=client, prefix=f"c{uuid.uuid4().hex[:6]}")
    starts: list[tuple[float, str, str]] = []
    running: dict[str, int] = {}
    overlap: list[str] = []
    done = asyncio.Event()
    total = 12

    async def process(job: Job) -> dict[str, Any]:
        starts.append((time.monotonic(), job.id, job.group))
        running[job.group] = running.get(job.group, 0) + 1
        if running[job.group] > 1:
            overlap.append(job.id)
        try:
            await asyncio.sleep(0.02)
            if job.id == "flaky" and job.attempts_made == 0:
                raise RuntimeError("first try fails")
        finally:
            running[job.group] -= 1
        return {"id": job.id}

    async def on_done(_event: JobEvent) -> None:
        if len(await queue.job_ids(JobState.COMPLETED)) >= total:
            done.set()

    limits = QueueLimits(rate=RateLimit(4, 1000), group_concurrency=1)
    worker = Worker(queue, process, concurrency=4, limits=limits, idle_block_s=1.0)
    worker.on("completed", on_done)
    runner = asyncio.create_task(worker.run())
    try:
        await queue.add("x", {}, job_id="flaky", backoff=Backoff("fixed", 100), attempts=3, group="a")
        for i in range(total - 1):
            await queue.add("x", {"i": i}, job_id=f"j{i}", group="ab"[i % 2])
        async with asyncio.timeout(20):
            await done.wait()
    finally:
        await worker.close(5)
        await runner
    flaky = await queue.get("flaky")
    await client.aclose()
    assert flaky is not None
    assert (flaky.state, flaky.attempts_made) == (JobState.COMPLETED, 2)
    assert not overlap, "group_concurrency=1 let two jobs of a group run at once"
    times = sorted(t for t, _, _ in starts)
    # The rate limit: no more than 4 starts in any 1 s window (13 starts need at least 3 windows).
    assert all(sum(1 for u in times if t <= u < t + 1.0) <= 4 for t in times)
    assert times[-1] - times[0] >= 2.0


def _failover_shard(cluster: RedisClusterSet, prefix: str) -> None:
    """CLUSTER FAILOVER on a replica of the master that owns the queue's slot (a planned, coordinated switch)."""
    _master, replica = cluster.owner_and_replica(f"{{{prefix}:q}}:wait")
    with replica.client() as c:
        c.execute_command("CLUSTER", "FAILOVER")


def _worker_cfg(cluster: RedisClusterSet) -> dict[str, Any]:
    return {
        "cluster_nodes": [list(a) for a in cluster.addresses()],
        "concurrency": 20,
        "job_ms": 2,
        "lease_ms": 3000,
        "stalled_ms": 1000,
        "idle_block_s": 1.0,
    }


async def _shard_failover(cluster: RedisClusterSet, tmp_path: Path, rate: int, duration_s: float, label: str) -> None:
    prefix = f"fo{uuid.uuid4().hex[:8]}"
    before, _ = cluster.owner(f"{{{prefix}:q}}:wait")
    figures = await failover_under_load(
        label=label,
        target=cluster.target(),
        worker_cfg=_worker_cfg(cluster),
        workdir=tmp_path,
        fault=lambda: _failover_shard(cluster, prefix),
        rate_per_s=rate,
        duration_s=duration_s,
        fault_at_s=duration_s / 3,
        drain_s=20.0,
        prefix=prefix,
    )
    print(figures.line())
    after, _ = cluster.owner(f"{{{prefix}:q}}:wait")
    assert after.port != before.port, "the queue's shard did not change master"
    # A manual failover waits for the replica to catch up: nothing acknowledged is lost.
    assert figures.lost == 0
    assert figures.restarted == 0
    assert figures.work_resumes_s is not None
    assert figures.work_resumes_s < 30  # generous: measured 0.2-4.3 s on a 2-core machine at load 9


async def test_manual_failover_of_the_queue_shard_under_load(cluster: RedisClusterSet, tmp_path: Path) -> None:
    """CLUSTER FAILOVER of the queue's shard at 100 adds/s: nothing acknowledged lost, no worker process dies."""
    await _shard_failover(cluster, tmp_path, rate=100, duration_s=6.0, label="cluster, manual failover, short")


@pytest.mark.slow
async def test_manual_failover_under_steady_load(cluster: RedisClusterSet, tmp_path: Path) -> None:
    """The measured cost of a manual failover of the queue's shard under steady adds (figures printed; 200/s by
    default for the same reason as the Sentinel figure: the shared 2-core machine)."""
    await _shard_failover(cluster, tmp_path, rate=SLOW_RATE, duration_s=20.0, label="cluster, manual failover")
