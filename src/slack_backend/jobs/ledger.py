"""Remembers which jobs already posted their draft, so a rerun after a stall never posts it twice."""

from __future__ import annotations

import time

from slack_backend.queue import Queue
from slack_backend.queue.connection import RedisClient

# Long past any rerun: stall recovery happens within seconds, operator retries within days at most.
KEEP_MS = 7 * 24 * 3600 * 1000
# How often a process trims entries past KEEP_MS, on a mark: the trim is housekeeping, and sent with every mark (as a
# MULTI transaction) it cost twice the mark itself, 558,000 client instructions against 256,500 (docs/performance.md,
# round 22).
TRIM_EVERY_MS = 60_000


class RedisDeliveryLedger:
    """A sorted set of delivered job ids (scored by time) under the queue's hash tag; old entries are trimmed."""

    def __init__(self, redis: RedisClient, queue: Queue) -> None:
        self._redis = redis
        self._key = f"{queue.keys.tag}:delivered"
        self._trimmed_ms = 0  # when this process last trimmed: never, so its first mark trims

    async def delivered(self, job_id: str) -> bool:
        return await self._redis.zscore(self._key, job_id) is not None

    async def mark_delivered(self, job_id: str) -> None:
        """Mark the job delivered; the first mark of each minute also drops the entries past KEEP_MS."""
        now_ms = int(time.time() * 1000)
        if now_ms - self._trimmed_ms < TRIM_EVERY_MS:
            await self._redis.zadd(self._key, {job_id: now_ms})
            return
        self._trimmed_ms = now_ms
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key, {job_id: now_ms})
            pipe.zremrangebyscore(self._key, "-inf", now_ms - KEEP_MS)
            await pipe.execute()

    async def forget(self, job_id: str) -> None:
        """Let an operator's retry post again (the user asked for a fresh draft)."""
        await self._redis.zrem(self._key, job_id)
