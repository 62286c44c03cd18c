"""`python -m bench.enqueue_cost [--n N] [--runs R]`: one-by-one `Queue.add` against raw LPUSH, interleaved.

Both run in one process (on uvloop, as the bench's drivers), in alternating blocks of 100 awaited calls of the
bench payload, against a redis-server of their own, so a loaded machine weighs on both alike. Reported per run:
adds/s of each and their ratio (wall clock), client CPU per call (this process's CPU time, split by block), Redis
CPU per call (`INFO cpu`, read around each system's blocks) and `INFO commandstats` usec_per_call of EVALSHA.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import redis
from redis.asyncio import Redis

from bench._server import BenchRedis
from bench.harness import payload
from slack_backend.cli_service import run_event_loop
from slack_backend.queue import Queue, create_redis

BLOCK = 100


def _redis_cpu_s(stats: redis.Redis) -> float:
    info = stats.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def one_run(url: str, n: int) -> str:
    """Add `n` jobs with each system, interleaved by blocks; one line of figures."""
    stats = redis.Redis.from_url(url)
    raw = Redis.from_url(url)
    key = f"raw:{uuid.uuid4().hex[:8]}"
    client = create_redis(url)
    queue = Queue(f"cost-{uuid.uuid4().hex[:8]}", connection=client, prefix="bench")
    datas = [payload(i) for i in range(n + 200)]
    for data in datas[:200]:
        await queue.add("slack-request", data)
        await raw.lpush(key, json.dumps(data))
    stats.config_resetstat()
    wall = {"ours": 0.0, "raw": 0.0}
    cpu = {"ours": 0.0, "raw": 0.0}
    rcpu = {"ours": 0.0, "raw": 0.0}
    for start in range(200, n + 200, BLOCK):
        block = datas[start : start + BLOCK]
        for system in ("ours", "raw"):
            r0, c0, t0 = _redis_cpu_s(stats), time.process_time(), time.perf_counter()
            if system == "ours":
                for data in block:
                    await queue.add("slack-request", data)
            else:
                for data in block:
                    await raw.lpush(key, json.dumps(data))
            wall[system] += time.perf_counter() - t0
            cpu[system] += time.process_time() - c0
            rcpu[system] += _redis_cpu_s(stats) - r0
    commands = stats.info("commandstats")
    per_call = {name: float(commands.get(f"cmdstat_{name}", {}).get("usec_per_call", 0.0)) for name in ("evalsha",)}
    await client.aclose()
    await raw.aclose()
    stats.close()
    us = 1e6 / n
    return (
        f"ours {n / wall['ours']:,.0f}/s raw {n / wall['raw']:,.0f}/s ours/raw {wall['raw'] / wall['ours']:.2f} | "
        f"client CPU us/call ours {cpu['ours'] * us:.1f} raw {cpu['raw'] * us:.1f} | "
        f"Redis CPU us/call ours {rcpu['ours'] * us:.1f} raw {rcpu['raw'] * us:.1f} | "
        f"EVALSHA usec_per_call {per_call['evalsha']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=5000, help="adds per system per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = BenchRedis(Path(tmp))
        server.start()
        try:
            for run in range(args.runs):
                print(f"run {run + 1}: {run_event_loop(one_run(server.url, args.n))}", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
