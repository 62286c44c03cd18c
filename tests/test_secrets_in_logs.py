"""Secrets stay secret: a real worker process with tokens in its environment never writes them to logs or Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from slack_backend.config import load_settings
from slack_backend.jobs import queue_ai_response
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import JobState
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.support.engine import wait_until
from tests.support.procs import ROOT, spawn

BOT_TOKEN = "xoxb-111111111111-222222222222-SeCrEtBoTtOkEn0123456789"
API_KEY = "sk-ant-api03-SeCrEtApIkEy0123456789abcdef"
SIGNING_SECRET = "SeCrEtSiGnInG0123456789abcdef00"
# A group DM (G...): a thread the bot token may read.
TEAM, USER, CHANNEL, THREAD = "T0SECRET1", "U0SECRET1", "G0SECRET1", "1700000000.000100"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeAnthropic]]:
    async with FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM) as slack, FakeAnthropic(api_key=API_KEY) as claude:
        yield slack, claude


async def test_worker_logs_and_redis_never_hold_a_token(
    fakes: tuple[FakeSlack, FakeAnthropic], redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """A job reads a thread, calls the model, posts with the bot token: no log line or Redis value holds a secret."""
    slack, claude = fakes
    slack.add_thread(CHANNEL, THREAD, [{"user": "U0OTHER1", "text": "earlier message", "ts": THREAD}], mpim=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": claude.base_url,
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
    }
    log_path = tmp_path / "worker.log"
    proc = spawn([sys.executable, "-m", "slack_backend.cli", "worker"], env, log_path)
    queue = ai_responses_queue(redis_client, load_settings({"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}))
    try:
        data = {
            "workspace_id": TEAM,
            "user_id": USER,
            "channel_id": CHANNEL,
            "trigger": "mention",
            "trigger_text": "what should I say?",
            "message_ts": "1700000001.000200",
            "thread_ts": THREAD,
        }
        added = await queue_ai_response(queue, data, job_id="EvSecretTest1")

        async def completed() -> bool:
            job = await queue.get(added.job_id)
            return job is not None and job.state is JobState.COMPLETED

        await wait_until(completed, timeout_s=30, every_s=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    assert slack.calls_to("chat.postEphemeral"), "the job really used the bot token"
    assert claude.message_requests, "the job really used the API key"
    lines = log_path.read_text().splitlines()
    job_lines = [json.loads(line) for line in lines if line.startswith("{") and "EvSecretTest1" in line]
    assert job_lines, "the job's log lines carry its id"
    assert all(entry.get("workspace", TEAM) == TEAM for entry in job_lines)
    for secret in (BOT_TOKEN, API_KEY, SIGNING_SECRET):
        assert not [line for line in lines if secret in line], "a secret reached the logs"
    # Every key that names this test's prefix anywhere, not only those starting with the queue's tag, so a key of
    # the app's own outside the tag would be read too. (Not the whole keyspace: other tests' job data may carry
    # these test constants.)
    keys = await redis_client.keys(f"*{prefix}*")
    assert f"{queue.keys.tag}:delivered" in keys, "the ledger the delivery wrote is among the keys read"
    for key in keys:
        kind = await redis_client.type(key)
        if kind == "hash":
            dump = json.dumps(await redis_client.hgetall(key))
        elif kind == "stream":
            dump = json.dumps(await redis_client.xrange(key))
        elif kind == "zset":
            dump = json.dumps(await redis_client.zrange(key, 0, -1))
        elif kind == "list":
            dump = json.dumps(await redis_client.lrange(key, 0, -1))
        else:
            dump = repr(await redis_client.get(key))
        for secret in (BOT_TOKEN, API_KEY, SIGNING_SECRET):
            assert secret not in dump, f"a secret reached Redis key {key!r}"
