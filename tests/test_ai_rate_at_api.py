"""The AI rate limit holds where the AI API sees it: counted at the fake model's receive time, 3 worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from slack_backend.ai import AIFailure, DraftRequest, TransientAIError
from slack_backend.ai.offline import OfflineDrafter, make_drafter
from slack_backend.queue import JobState, RateGate, RateLimit
from slack_backend.web.metrics import Metrics
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.support.engine import finished, wait_until
from tests.support.fleet import WorkerFleet, describe_counts
from tests.support.measures import max_in_window
from tests.support.model_process import ModelProcess
from tests.support.pipeline import API_KEY, PipelineFactory
from tests.support.procs import ROOT, spawn
from tests.support.slack_requests import BOT_TOKEN, GROUP_DM, SECRET, TEAM, post_signed

RATE_MAX = 5
RATE_WINDOW_MS = 1000
MENTIONS = 50
PROCESSES = 3
# The API's receive time and the Redis clock that stamps a slot are different clocks a few ms apart, and a
# process on a loaded 2-core machine can be a scheduler tick late: the limit must hold in windows 20 ms short.
CLOCK_SLACK_MS = 20


def mention(i: int) -> tuple[bytes, str]:
    """An app_mention in its own thread, with its own event id (Slack's de-duplication key)."""
    body = {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP1",
        "type": "event_callback",
        "event_id": f"Ev0RATE{i:04d}",
        "event_time": 1700000000,
        "event": {
            "type": "app_mention",
            "user": f"U0RATE{i:03d}",
            "text": f"<@U0FAKEBOT> what do I answer to question {i}?",
            "ts": f"1700000100.{i:06d}",
            "thread_ts": f"1700000000.{i:06d}",
            "channel": GROUP_DM,
            "event_ts": f"1700000100.{i:06d}",
        },
    }
    return json.dumps(body).encode(), "application/json"


def spawn_cli_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`slack-backend worker` as an operator runs it: one process, the settings from its environment."""
    args = [sys.executable, "-m", "slack_backend.cli", "worker", "--processes", "1"]
    return spawn(args, {**os.environ, "PYTHONPATH": str(ROOT), **env}, log_path)


async def test_model_calls_stay_within_the_limit_at_the_api_across_three_processes(
    pipeline: PipelineFactory,
    slack: FakeSlack,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """50 mentions, 3 `slack-backend worker` processes, 5/s: at most 5 model calls in any 980 ms, mean >= 4.75/s,
    by the clock of a fake model in a process of its own."""
    for i in range(MENTIONS):
        slack.add_thread(
            GROUP_DM,
            f"1700000000.{i:06d}",
            [{"user": "U0OTHER", "text": f"question {i}", "ts": f"1700000000.{i:06d}"}],
            mpim=True,
        )
    # Every job reads its thread (Tier 3, as for a Marketplace app): a bot token may, in a group DM.
    slack.marketplace_app = True
    # Thread reads take 50-500 ms, as Slack's do: jobs started together reach the model call apart.
    slack.slow_down("conversations.replies", 0.05, 0.5)
    limits = {"AI_RATE_LIMIT_MAX": str(RATE_MAX), "AI_RATE_LIMIT_DURATION_MS": str(RATE_WINDOW_MS)}
    fleet = WorkerFleet({}, tmp_path / "workers")
    # The model's fake runs apart from this process: a pause of this test's loop (294 ms in a CI run of the whole
    # suite) would stamp the first window's burst late, into the next window.
    model = ModelProcess(API_KEY, tmp_path / "model")
    try:
        await model.start({**os.environ, "PYTHONPATH": str(ROOT)})
        async with pipeline(with_worker=False, **limits) as p:
            for n in range(PROCESSES):
                env = {
                    "REDIS_URL": redis_url,
                    "REDIS_PREFIX": prefix,
                    "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / f'worker{n}.sqlite'}",
                    "SLACK_SIGNING_SECRET": SECRET,
                    "SLACK_BOT_TOKEN": BOT_TOKEN,
                    "SLACK_API_URL": slack.base_url,
                    "ANTHROPIC_API_KEY": API_KEY,
                    "ANTHROPIC_BASE_URL": model.base_url,
                    "LOG_FORMAT": "json",
                    "SLACK_MARKETPLACE_APP": "true",
                    **limits,
                }
                proc = spawn_cli_worker(env, tmp_path / f"worker{n}.log")
                fleet.procs.append(proc)
                fleet.logs[proc.pid] = tmp_path / f"worker{n}.log"
            await fleet.wait_ready(p.queue, fleet.procs, timeout_s=90)  # start-up is slow on a loaded host
            # The burst is taken in while the queue is paused, so every job can start at once when it resumes.
            await p.queue.pause()
            replies = await asyncio.gather(*(post_signed(p.client, mention(i)) for i in range(MENTIONS)))
            assert [r.status_code for r in replies] == [200] * MENTIONS
            await p.queue.resume()
            await wait_until(lambda: finished(p.queue, MENTIONS), timeout_s=60, every_s=0.1)
            counts = await p.queue.counts()
            workers_seen = {job.worker for job in await p.queue.get_jobs(JobState.COMPLETED)}
            assert await fleet.terminate(fleet.procs) == [0] * PROCESSES
        received_s = model.stop()
    finally:
        fleet.close()
    calls_ms = [t * 1000 for t in received_s]
    worst = max_in_window(calls_ms, RATE_WINDOW_MS - CLOCK_SLACK_MS)
    worst_full = max_in_window(calls_ms, RATE_WINDOW_MS)
    span_s = (max(calls_ms) - min(calls_ms)) / 1000
    # The first window's calls come at once; the rest of the backlog is paced: the mean over the paced part.
    mean = (len(calls_ms) - RATE_MAX) / span_s
    print(
        f"\nat the API: {len(calls_ms)} model calls from {len(workers_seen)} processes in {span_s:.2f} s; "
        f"at most {worst} in any {RATE_WINDOW_MS - CLOCK_SLACK_MS} ms, {worst_full} in any {RATE_WINDOW_MS} ms "
        f"(limit {RATE_MAX}); mean {mean:.2f}/s; jobs {describe_counts(counts)}"
    )
    assert len(calls_ms) == MENTIONS, "one model call per mention"
    assert worst <= RATE_MAX
    assert len(workers_seen) == PROCESSES, "every process made model calls"
    assert mean >= 0.95 * RATE_MAX * 1000 / RATE_WINDOW_MS


async def test_the_slot_is_taken_as_the_request_goes_out_and_by_the_stand_in(claude: FakeAnthropic) -> None:
    """Claude's drafter awaits the slot once per call, before the API receives it; the offline stand-in does too."""
    taken: list[float] = []

    async def slot() -> None:
        await asyncio.sleep(0.05)  # a gate that makes the caller wait
        taken.append(time.monotonic())

    request = DraftRequest(trigger_text="hi", context=(), requester_user_id="U1")
    drafter = make_drafter(API_KEY, "claude-test", claude.base_url, 64, before_call=slot)
    try:
        await drafter.draft(request)
        await drafter.draft(request)
    finally:
        await drafter.aclose()
    received = [r.received_s for r in claude.message_requests]
    assert len(taken) == 2
    assert all(t <= r for t, r in zip(taken, received, strict=True))
    offline = OfflineDrafter(before_call=slot)
    await offline.draft(request)
    assert len(taken) == 3


async def test_a_slot_wait_longer_than_the_timeout_is_not_a_timeout(claude: FakeAnthropic) -> None:
    """A slot wait of 0.6 s under a 0.3 s client timeout still sends, on a new connection and on a pooled one."""

    async def slow_slot() -> None:
        await asyncio.sleep(0.6)

    request = DraftRequest(trigger_text="hi", context=(), requester_user_id="U1")
    drafter = make_drafter(API_KEY, "claude-test", claude.base_url, 64, timeout_s=0.3, before_call=slow_slot)
    try:
        await drafter.draft(request)
        await drafter.draft(request)
    finally:
        await drafter.aclose()
    assert len(claude.message_requests) == 2


async def test_a_failed_or_cancelled_slot_sends_nothing_and_leaves_no_connection_open(claude: FakeAnthropic) -> None:
    """A slot that raises is a transient connection error and one cancelled cancels the call; the API gets
    neither, the next call goes out, and once the drafter is closed no connection to the API is left open."""
    fail = True

    async def slot() -> None:
        if fail:
            raise RuntimeError("the gate's Redis is down")

    request = DraftRequest(trigger_text="hi", context=(), requester_user_id="U1")
    drafter = make_drafter(API_KEY, "claude-test", claude.base_url, 64, before_call=slot)
    try:
        with pytest.raises(TransientAIError) as caught:
            await drafter.draft(request)  # a new connection
        assert caught.value.failure is AIFailure.CONNECTION
        fail = False
        await drafter.draft(request)
        fail = True
        with pytest.raises(TransientAIError):
            await drafter.draft(request)  # a pooled connection
        fail = False
        waiting = asyncio.Event()

        async def endless_slot() -> None:
            waiting.set()
            await asyncio.sleep(3600)

        stuck = make_drafter(API_KEY, "claude-test", claude.base_url, 64, before_call=endless_slot)
        try:
            call = asyncio.create_task(stuck.draft(request))
            await waiting.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        finally:
            await stuck.aclose()
        await drafter.draft(request)
    finally:
        await drafter.aclose()
    assert len(claude.message_requests) == 2

    async def all_closed() -> bool:
        return claude.open_connections() == 0

    await wait_until(all_closed, timeout_s=5)


async def test_call_gate_waits_are_metrics(redis_client: Redis, prefix: str) -> None:
    """Waits at the model-call gate show on /metrics as slack_backend_call_gate_waits and _wait_seconds."""
    gate = RateGate(redis_client, f"{{{prefix}}}:calls", RateLimit(1, 150), name="ai-responses")
    metrics = Metrics()
    metrics.instrument_gate(gate)
    await gate.acquire()
    await gate.acquire()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families((await metrics.render()).decode())
        for sample in family.samples
    }
    labels = (("queue", "ai-responses"),)
    assert samples[("slack_backend_call_gate_waits_total", labels)] == 1
    assert samples[("slack_backend_call_gate_wait_seconds_total", labels)] >= 0.1
