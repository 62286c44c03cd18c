"""Remembers which jobs already posted their draft, so a rerun after a stall never posts it twice."""

from __future__ import annotations

import time

from slack_backend.queue import Queue
from slack_backend.queue.connection import RedisClient

# Long past any rerun: stall recovery happens within seconds, operator retries within days at most.
KEEP_MS = 7 * 24 * 3600 * 1000


class RedisDeliveryLedger:
    """A sorted set of delivered job ids (scored by time) under the queue's hash tag; old entries are trimmed."""

    def __init__(self, redis: RedisClient, queue: Queue) -> None:
        self._redis = redis
        self._key = f"{queue.keys.tag}:delivered"

    async def delivered(self, job_id: str) -> bool:
        return await self._redis.zscore(self._key, job_id) is not None

    async def mark_delivered(self, job_id: str) -> None:
        now_ms = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key, {job_id: now_ms})
            pipe.zremrangebyscore(self._key, "-inf", now_ms - KEEP_MS)
            await pipe.execute()

    async def forget(self, job_id: str) -> None:
        """Let an operator's retry post again (the user asked for a fresh draft)."""
        await self._redis.zrem(self._key, job_id)
