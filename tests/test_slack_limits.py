"""The Slack call limiter: one window per workspace and method, shared by every process through Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from slack_backend.jobs.slack_limits import REPLIES, USERS_INFO, SlackCallLimiter, slack_call_limits
from slack_backend.queue import create_redis


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[Redis]:
    """Another connection, as another worker process has."""
    client = create_redis(redis_url)
    try:
        yield client  # type: ignore[misc]
    finally:
        await client.aclose()


async def test_a_read_taken_by_one_process_is_not_free_for_another(
    redis_client: Redis, second_client: Redis, prefix: str
) -> None:
    """Outside the Marketplace: one read per workspace per window, whichever process asks; other workspaces and
    other methods keep their own windows; a caller that will not wait gets False at once."""
    limits = slack_call_limits(marketplace_app=False, minute_ms=1000)
    one, other = SlackCallLimiter(redis_client, prefix, limits), SlackCallLimiter(second_client, prefix, limits)
    assert await one.permit("T1", REPLIES, max_wait_s=0)
    started = time.monotonic()
    assert not await other.permit("T1", REPLIES, max_wait_s=0.2), "the slot is 1 s away: beyond the wait allowed"
    assert time.monotonic() - started < 0.15, "refused at once, not after waiting"
    assert await other.permit("T2", REPLIES, max_wait_s=0), "another workspace has its own window"
    assert await other.permit("T1", USERS_INFO, max_wait_s=0), "another method has its own window"
    assert await other.permit("T1", REPLIES, max_wait_s=2.0), "within the wait: it waits for the next slot"
    assert time.monotonic() - started >= 1.0


async def test_a_429_blocks_the_method_for_every_process_until_retry_after(
    redis_client: Redis, second_client: Redis, prefix: str
) -> None:
    """Slack's Retry-After, noted by one process, holds the workspace's method for all; a shorter wait is refused."""
    limits = slack_call_limits(marketplace_app=True, minute_ms=60_000)
    one, other = SlackCallLimiter(redis_client, prefix, limits), SlackCallLimiter(second_client, prefix, limits)
    await one.defer("T1", REPLIES, 0.5)
    assert not await other.permit("T1", REPLIES, max_wait_s=0.1)
    started = time.monotonic()
    assert await other.permit("T1", REPLIES, max_wait_s=1.0)
    assert time.monotonic() - started >= 0.3, "it waited out the rest of the Retry-After"
    assert await other.permit("T2", REPLIES, max_wait_s=0), "other workspaces are not held"
