"""/metrics end to end: a real Worker instrumented by Metrics, the real web app, and the exposition parsed back."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from slack_backend.config import Settings, load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import (
    Backoff,
    Job,
    JobState,
    KeepJobs,
    Queue,
    QueueLimits,
    RateLimit,
    RetryAfter,
    Worker,
    create_redis,
)
from slack_backend.slack.errors import SlackRejectedError
from slack_backend.web.metrics import Metrics, serve_metrics
from tests.support.app import served
from tests.support.engine import finished, running, wait_until
from tests.support.slack_requests import BOT_TOKEN, SECRET

ADMIN_TOKEN = "admin-token-for-metrics-0123456789"
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
DATA_MARKER = "PRIVATE-MESSAGE-TEXT-7c1f"
QUEUE = "ai-responses"
RATE_MAX = 5
RATE_WINDOW_MS = 300
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def settings_for(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return load_settings(
        {
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "METRICS_TOKEN": METRICS_TOKEN,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}",
        }
    )


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def tokens_for(n: int) -> tuple[int, int]:
    return 100 + n, 10 + n


class Plan:
    """20 jobs: 14 plain successes, 3 Slack refusals (fail at once), 2 that fail once then succeed, 1 released once."""

    def __init__(self) -> None:
        self.calls: Tally[str] = Tally()
        self.entered_ms: list[float] = []  # every processor call, on the monotonic clock, as it arrives
        self.jobs: list[tuple[str, str, int]] = []  # (job id, workspace, n)
        for n in range(20):
            kind = "ok" if n < 14 else "refused" if n < 17 else "flaky" if n < 19 else "limited"
            self.jobs.append((f"{kind}-{n}", "TALPHA" if n % 2 == 0 else "TBETA", n))

    async def process(self, job: Job) -> dict[str, Any]:
        self.entered_ms.append(time.monotonic() * 1000)
        self.calls[job.id] += 1
        kind = job.id.split("-")[0]
        if kind == "refused":
            raise SlackRejectedError("the app cannot see the channel", error="channel_not_found")
        if kind == "flaky" and self.calls[job.id] == 1:
            raise RuntimeError("upstream hiccup")
        if kind == "limited" and self.calls[job.id] == 1:
            raise RetryAfter(0.05)
        n = int(job.data["n"])
        input_tokens, output_tokens = tokens_for(n)
        return {"input_tokens": input_tokens, "output_tokens": output_tokens, "model": "fake", "draft_chars": 5}

    def expected_tokens(self) -> dict[tuple[str, str], int]:
        totals: Tally[tuple[str, str]] = Tally()
        for job_id, workspace, n in self.jobs:
            if not job_id.startswith("refused"):
                input_tokens, output_tokens = tokens_for(n)
                totals[(workspace, "input")] += input_tokens
                totals[(workspace, "output")] += output_tokens
        return dict(totals)


async def test_metrics_count_outcomes_timings_depth_and_tokens(
    redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """20 jobs through an instrumented Worker show up exactly on /metrics: outcomes, histograms, depth, tokens."""
    settings = settings_for(redis_url, prefix, tmp_path)
    queue = ai_responses_queue(redis_client, settings)
    plan = Plan()
    for job_id, workspace, n in plan.jobs:
        attempts = 2 if job_id.startswith("flaky") else 1
        data = {"n": n, "text": f"{DATA_MARKER} {ADMIN_TOKEN} {BOT_TOKEN}"}
        await queue.add(
            "ai-response", data, job_id=job_id, group=workspace, attempts=attempts, backoff=Backoff("fixed", 0)
        )
    metrics = Metrics()
    worker = Worker(
        queue,
        plan.process,
        concurrency=5,
        limits=QueueLimits(rate=RateLimit(RATE_MAX, RATE_WINDOW_MS)),
        lease_ms=5_000,
        keep_completed=KeepJobs(count=1000),
        keep_failed=KeepJobs(count=1000),
        idle_block_s=0.2,
    )
    metrics.instrument(worker)
    async with served(settings, redis=redis_client, metrics=metrics) as client:
        async with running(worker):
            await wait_until(lambda: finished(queue, 20), timeout_s=20)
            live = parse((await client.get("/metrics", headers=BEARER)).text)
            assert value(live, "slack_backend_workers", queue=QUEUE) == 1
        # Left in the queue after the worker stopped, so depth is more than finished jobs.
        await queue.add("ai-response", {"n": 100}, job_id="left-waiting-1", group="TALPHA")
        await queue.add("ai-response", {"n": 101}, job_id="left-waiting-2", group="TBETA")
        await queue.add("ai-response", {"n": 102}, job_id="left-delayed", delay_ms=60_000)
        response = await client.get("/metrics", headers=BEARER)

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = parse(response.text)
    outcomes = {
        outcome: value(samples, "slack_backend_jobs_total", queue=QUEUE, outcome=outcome)
        for outcome in ("completed", "failed", "retried", "released", "stalled")
    }
    assert outcomes == {"completed": 17, "failed": 3, "retried": 2, "released": 1, "stalled": 0}
    assert value(samples, "slack_backend_job_wait_seconds_count", queue=QUEUE) == 17
    assert value(samples, "slack_backend_job_run_seconds_count", queue=QUEUE) == 17
    assert value(samples, "slack_backend_job_wait_seconds_bucket", queue=QUEUE, le="+Inf") == 17

    counts = await queue.counts()
    assert (counts[JobState.WAITING], counts[JobState.DELAYED]) == (2, 1)
    for state, count in counts.items():
        assert value(samples, "slack_backend_queue_depth", queue=QUEUE, state=state.value) == count
    assert value(samples, "slack_backend_workers", queue=QUEUE) == 0

    for (workspace, direction), tokens in plan.expected_tokens().items():
        assert value(samples, "slack_backend_ai_tokens_total", workspace=workspace, direction=direction) == tokens
    assert value(samples, "slack_backend_slack_delivery_errors_total", kind="channel_not_found") == 3

    # The rate-limit figures against what happened at the processor, not against worker.stats (which the scrape
    # reads, so comparing the two would only check the wiring). 20 jobs + 2 retries + 1 rerun = 23 calls at 5 per
    # 300 ms span at least 4 windows, and this worker's one fetch loop spends most of that asleep on the limit.
    entered = plan.entered_ms
    assert len(entered) == sum(plan.calls.values()) == 23
    span_s = (max(entered) - min(entered)) / 1000
    waits = value(samples, "slack_backend_rate_limit_waits_total", queue=QUEUE)
    waited_s = value(samples, "slack_backend_rate_limit_wait_seconds_total", queue=QUEUE)
    assert 1 <= waits <= len(entered), waits
    # One loop sleeps one wait at a time, all between its first and last start: at most the span (plus 1 ms per
    # wait, rounded up to whole ms). At least half of it: the rest is fetching and the 50 ms hold (measured: about
    # 0.9 of the span; half leaves room for a loaded 2-core machine).
    assert 0.5 * span_s <= waited_s <= span_s + 0.001 * waits, (waited_s, span_s)
    # No single sleep is longer than a slot is held (window + 5 ms guard band): the worker sleeps to the next slot.
    assert waited_s / waits <= (RATE_WINDOW_MS + 5 + 1) / 1000, (waited_s, waits)
    assert value(samples, "slack_backend_redis_errors_total") == 0

    secrets = (ADMIN_TOKEN, SECRET, BOT_TOKEN, DATA_MARKER)
    for _name, labels in samples:
        for _label, label_value in labels:
            assert not any(secret in label_value for secret in secrets), label_value
    assert not any(secret in response.text for secret in secrets)


async def test_metrics_live_in_their_own_registry() -> None:
    """Two Metrics objects never clash and the process-global default registry stays free of our names."""
    first, second = Metrics(), Metrics()
    first.count_delivery_error("invalid_auth")
    first.count_delivery_error("Not a <safe> kind")
    text = (await first.render()).decode()
    assert 'slack_backend_slack_delivery_errors_total{kind="invalid_auth"} 1.0' in text
    assert 'slack_backend_slack_delivery_errors_total{kind="other"} 1.0' in text
    assert "slack_backend_slack_delivery_errors_total{" not in (await second.render()).decode()
    assert REGISTRY.get_sample_value("slack_backend_slack_delivery_errors_total", {"kind": "invalid_auth"}) is None


async def test_worker_process_serves_metrics_on_its_own_port(
    redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """serve_metrics answers GET /metrics over real HTTP with fresh queue depth, and frees the port when done."""
    settings = settings_for(redis_url, prefix, tmp_path)
    queue = ai_responses_queue(redis_client, settings)
    await queue.add("ai-response", {"n": 1}, job_id="waiting-one")
    metrics = Metrics()
    metrics.watch(queue)
    async with serve_metrics(metrics, 0) as server, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 200
    assert value(parse(response.text), "slack_backend_queue_depth", queue=QUEUE, state="waiting") == 1
    # The socket is closed: binding the same port again works.
    async with serve_metrics(metrics, server.port):
        pass


async def test_metrics_scrape_survives_redis_outage(tmp_path: Path, prefix: str) -> None:
    """A scrape while Redis is unreachable still renders, and counts the Redis error."""
    client = create_redis("redis://127.0.0.1:1/0")
    try:
        metrics = Metrics()
        metrics.watch(Queue(QUEUE, connection=client, prefix=prefix))
        samples = parse((await asyncio.wait_for(metrics.render(), 10)).decode())
    finally:
        await client.aclose()
    assert value(samples, "slack_backend_redis_errors_total") == 1


async def test_public_metrics_need_the_metrics_token(
    redis_client: Redis, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """/metrics on the public app: 403 with no METRICS_TOKEN set; with it, 401 unless the right bearer token."""
    tokened = settings_for(redis_url, prefix, tmp_path)
    closed = dataclasses.replace(tokened, metrics_token=None)
    async with served(closed, redis=redis_client, metrics=Metrics()) as client:
        unset = await client.get("/metrics")
    async with served(tokened, redis=redis_client, metrics=Metrics()) as client:
        missing = await client.get("/metrics", headers={"Authorization": ""})
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-metrics-token"})
        odd = await client.get("/metrics", headers={b"Authorization": "Bearer t\u00e9".encode()})
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert unset.status_code == 403
    assert "METRICS_TOKEN" in unset.text
    assert [r.status_code for r in (missing, wrong, odd)] == [401, 401, 401]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert right.status_code == 200
    assert "slack_backend_queue_depth" in right.text
