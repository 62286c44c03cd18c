"""Load: 300 signed Slack requests a second for 60 s into the real web app with workers running, on loopback only."""

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

import aiohttp
import pytest
from redis.asyncio import Redis

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import JobState
from slack_backend.slack.signing import sign_request
from tests.fakes.slack_server import FakeSlack
from tests.support.procs import spawn
from tests.support.redis_server import free_port

# The scenario CI runs; LOAD_RATE_PER_S / LOAD_DURATION_S shrink it for a quick local smoke of the plumbing.
RATE_PER_S = int(os.environ.get("LOAD_RATE_PER_S", "300"))
DURATION_S = int(os.environ.get("LOAD_DURATION_S", "60"))
SECRET = "load-test-signing-secret-0123456789"


def _signed_command(i: int, receiver: FakeSlack) -> tuple[bytes, dict[str, str]]:
    form = {
        "command": "/draft",
        "text": f"load request {i}",
        "team_id": f"T0LOAD{i % 7:03d}",
        "channel_id": "C0LOAD001",
        "user_id": "U0LOAD001",
        # One response_url per request: Slack allows 5 uses of each, and a job uses 2 (progress, draft).
        "response_url": receiver.response_url(f"r{i}"),
        "trigger_id": f"load.{i}.trigger",
    }
    body = urlencode(form).encode()
    return body, {"Content-Type": "application/x-www-form-urlencoded", **sign_request(SECRET, body)}


async def _wait_healthy(http: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 60  # a fresh interpreter importing the app on a busy 2-core machine
    while True:
        try:
            async with http.get("/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the web app did not start")
        await asyncio.sleep(0.1)


@pytest.fixture
async def response_receiver() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_300_requests_a_second_for_60_s_each_become_one_job(
    redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path, response_receiver: FakeSlack
) -> None:
    """300 signed slash commands/s for 60 s: 0 errors, every request one job, every ack within Slack's 3 s."""
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
        # Nothing may leave the machine: Slack's Web API is the fake (so its loopback response_urls also pass the
        # edge's check), and any other host goes to a closed proxy.
        "SLACK_API_URL": response_receiver.base_url,
        "HTTP_PROXY": "http://127.0.0.1:1",
        "HTTPS_PROXY": "http://127.0.0.1:1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    web = spawn([sys.executable, "-m", "slack_backend.cli", "serve"], env, tmp_path / "web.log")
    worker = spawn([sys.executable, "-m", "slack_backend.cli", "worker"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    total = RATE_PER_S * DURATION_S
    # Signed before the clock starts (valid for Slack's 5 minutes), so the generator spends its time sending.
    requests = [_signed_command(i, response_receiver) for i in range(total)]
    latencies_ms: list[float] = []
    errors: list[str] = []
    try:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(10)) as http:
            await _wait_healthy(http)

            async def one(body: bytes, headers: dict[str, str], scheduled: float) -> None:
                # From the moment the request was due, not when its task ran: a generator falling behind
                # (queueing in the client) counts against the ack time, as it would for Slack.
                started = scheduled
                try:
                    async with http.post("/slack/events", data=body, headers=headers) as response:
                        await response.read()
                        latencies_ms.append((time.monotonic() - started) * 1000)
                        if response.status != 200:
                            errors.append(f"HTTP {response.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(type(exc).__name__)

            t0 = time.monotonic()
            tasks = []
            for i, (body, headers) in enumerate(requests):
                # Open loop: request i goes at its time whatever the earlier ones are doing.
                delay = t0 + i / RATE_PER_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(body, headers, t0 + i / RATE_PER_S)))
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
    assert ordered[-1] < 3000, "Slack drops a request not acked within 3 s"
    assert jobs == total
    assert response_receiver.calls_to("chat.postEphemeral") == [], "drafts went to response_urls, none ran out"
    drafted = sum(1 for posts in response_receiver.response_posts.values() if any("blocks" in p for p in posts))
    assert drafted == counts[JobState.COMPLETED], "every completed job's draft reached the fake, nothing went elsewhere"
    assert counts[JobState.COMPLETED] > 0, "workers ran while the load came in"
