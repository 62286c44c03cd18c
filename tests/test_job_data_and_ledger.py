"""Two promises of the docs about a job's life after enqueue: invalid data fails at run time at once, and the
delivery ledger forgets deliveries after 7 days (trimmed once a minute, not on every mark)."""

from __future__ import annotations

import time
from unittest.mock import patch

from redis.asyncio import Redis

from slack_backend.jobs.ledger import KEEP_MS, TRIM_EVERY_MS, RedisDeliveryLedger
from slack_backend.queue import JobState, Queue
from tests.support.engine import job_in_state, wait_until
from tests.support.monitor import monitored
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import CHANNEL, TEAM

DAY_MS = 24 * 3600 * 1000


async def test_job_data_invalid_at_run_time_fails_the_job_at_once_without_a_model_call(
    pipeline: PipelineFactory,
) -> None:
    """Data that skipped enqueue validation (bad workspace id) fails on its first run, attempts left unused."""
    async with pipeline() as p:
        # Queue.add writes what it is given: the app's own queue_ai_response would refuse this data.
        data = {"workspace_id": "not a slack id", "user_id": "U0123ABCD", "channel_id": CHANNEL, "trigger": "mention"}
        added = await p.queue.add("ai-response", data, job_id="bad-data", group=TEAM, attempts=4)
        await wait_until(job_in_state(p.queue, added.job_id, JobState.FAILED), timeout_s=10, every_s=0.05)
        job = await p.queue.get(added.job_id)
    assert job is not None
    assert job.attempts_made == 1, "no retry: invalid data can never succeed"
    assert job.failed_reason is not None
    assert job.failed_reason.startswith("invalid job data (")
    assert "workspace_id" in job.failed_reason
    assert "not a slack id" not in job.failed_reason, "the reason names the field, not the data"
    assert p.claude.message_requests == []


async def test_the_delivery_ledger_drops_entries_older_than_7_days(redis_client: Redis, prefix: str) -> None:
    """A delivery marked 8 days ago is gone after the next mark; one marked 6 days ago still blocks a repost."""
    queue = Queue("ai-responses", connection=redis_client, prefix=prefix)
    ledger = RedisDeliveryLedger(redis_client, queue)
    now_ms = int(time.time() * 1000)
    key = f"{queue.keys.tag}:delivered"
    await redis_client.zadd(key, {"eight-days-old": now_ms - 8 * DAY_MS, "six-days-old": now_ms - 6 * DAY_MS})
    await ledger.mark_delivered("new")
    assert KEEP_MS == 7 * DAY_MS, "the figure docs/operations.md gives"
    assert [await ledger.delivered(j) for j in ("eight-days-old", "six-days-old", "new")] == [False, True, True]
    assert await redis_client.zcard(key) == 2


async def test_the_ledger_trims_on_the_first_mark_of_each_minute_not_on_every_mark(
    redis_client: Redis, prefix: str
) -> None:
    """Marks within a minute of the last trim are one ZADD each, seen where Redis sees them; the first mark past the
    minute trims again, and every mark is kept."""
    queue = Queue("ai-responses", connection=redis_client, prefix=prefix)
    ledger = RedisDeliveryLedger(redis_client, queue)
    key = f"{queue.keys.tag}:delivered"
    await ledger.mark_delivered("first")
    now_ms = int(time.time() * 1000)
    await redis_client.zadd(key, {"eight-days-old": now_ms - 8 * DAY_MS})
    async with monitored(redis_client) as seen:
        await ledger.mark_delivered("second")
        await ledger.mark_delivered("third")
    assert [c[0].upper() for _, c in seen.commands if key in " ".join(c)] == ["ZADD", "ZADD"]
    assert await ledger.delivered("eight-days-old"), "not trimmed within the minute"
    with patch.object(time, "time", return_value=time.time() + TRIM_EVERY_MS / 1000 + 1):
        await ledger.mark_delivered("fourth")
    assert [await ledger.delivered(j) for j in ("eight-days-old", "first", "second", "third", "fourth")] == [
        False,
        True,
        True,
        True,
        True,
    ]
