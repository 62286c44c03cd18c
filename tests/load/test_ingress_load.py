"""Load: 300 signed Slack requests a second for 60 s into the real web app with workers running."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from redis.asyncio import Redis

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import JobState
from slack_backend.slack.signing import sign_request
from tests.fakes.slack_server import FakeSlack
from tests.support.procs import spawn
from tests.support.redis_server import free_port

RATE_PER_S = 300
DURATION_S = 60
SECRET = "load-test-signing-secret-0123456789"


@pytest.fixture
async def response_receiver() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_300_requests_a_second_for_60_s_each_become_one_job(
    redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path, response_receiver: FakeSlack
) -> None:
    """300 signed slash commands/s for 60 s: 0 errors, every request exactly one job; ack p50/p99/max reported."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "SLACK_SIGNING_SECRET": SECRET,
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "KEEP_COMPLETED": "100000",
    }
    web = spawn([sys.executable, "-m", "slack_backend.cli", "serve"], env, tmp_path / "web.log")
    worker = spawn([sys.executable, "-m", "slack_backend.cli", "worker"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    latencies_ms: list[float] = []
    errors: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_connections=200)) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("the web app did not start")
                await asyncio.sleep(0.1)

            async def one(i: int) -> None:
                form = {
                    "command": "/draft",
                    "text": f"load request {i}",
                    "team_id": f"T0LOAD{i % 7:03d}",
                    "channel_id": "C0LOAD001",
                    "user_id": "U0LOAD001",
                    "response_url": response_receiver.response_url(f"r{i % 50}"),
                    "trigger_id": f"load.{i}.trigger",
                }
                body = urlencode(form).encode()
                headers = {"Content-Type": "application/x-www-form-urlencoded", **sign_request(SECRET, body)}
                started = time.monotonic()
                try:
                    response = await http.post("/slack/events", content=body, headers=headers)
                    latencies_ms.append((time.monotonic() - started) * 1000)
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)

            total = RATE_PER_S * DURATION_S
            t0 = time.monotonic()
            tasks = []
            for i in range(total):
                # Open loop: request i goes at its time whatever the earlier ones are doing.
                delay = t0 + i / RATE_PER_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            sent_s = time.monotonic() - t0
    finally:
        for proc in (web, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (web, worker):
            assert await asyncio.to_thread(proc.wait, 30) == 0
    queue = ai_responses_queue(redis_client, load_settings({"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}))
    counts = await queue.counts()
    jobs = sum(counts.values())
    ordered = sorted(latencies_ms)
    p50, p99 = statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]
    print(
        f"\nload: {total} requests in {sent_s:.1f} s ({total / sent_s:.0f}/s), errors {len(errors)}, "
        f"ack p50 {p50:.1f} ms p99 {p99:.1f} ms max {ordered[-1]:.1f} ms; jobs {jobs} {dict(counts)}"
    )
    assert errors == []
    assert jobs == total
    assert counts[JobState.COMPLETED] > 0, "workers ran while the load came in"
