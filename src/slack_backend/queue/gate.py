"""RateGate: a cross-process sliding-window limiter that a running job takes a slot of right before an upstream call.

The queue's start limit (fetch) decides which job goes next; the gate bounds what the upstream API sees, since
the work between a start and the call (a quota check, a token lookup, a thread read) varies by hundreds of ms.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from slack_backend.queue._scripts import keyed_script
from slack_backend.queue.limits import RateLimit


@dataclass
class GateStats:
    """What a gate's callers waited: how many acquisitions had to wait, and for how long in all."""

    acquired: int = 0
    waits: int = 0
    wait_ms: int = 0


class RateGate:
    """At most `limit.max` acquisitions in any window of `limit.duration_ms`, across every process (Redis clock).

    Each slot is held for `duration_ms + margin_ms`, so jitter between the moment Redis stamps it
    and the moment the upstream receives the call stays inside the window. The key names the gate: every process
    that uses the same key shares its window. The wait is a plain sleep inside the caller (for a job: within its
    run, so it is not an attempt, and the worker keeps renewing the job's lease meanwhile).
    """

    def __init__(self, redis: Redis, key: str, limit: RateLimit, *, name: str = "") -> None:
        self.redis = redis
        self.key = key
        self.limit = limit
        self.name = name or key
        self.stats = GateStats()
        self._script = keyed_script(redis, "acquire")

    @property
    def hold_ms(self) -> int:
        """How long one acquisition keeps its slot: the window plus the guard band."""
        return self.limit.duration_ms + self.limit.margin_ms

    async def _reserve(self, max_wait_ms: int) -> tuple[bool, int]:
        reply = [int(x) for x in await self._script(keys=[self.key], args=[self.limit.max, self.hold_ms, max_wait_ms])]
        if reply[0] < 0:
            return False, max(1, reply[1])
        return True, reply[0]

    async def try_acquire(self) -> int:
        """Take a slot if one is free now: 0 when taken, else the ms until one frees (nothing is taken)."""
        taken, wait_ms = await self._reserve(0)
        return 0 if taken else wait_ms

    async def acquire(self, *, max_wait_s: float | None = None) -> bool:
        """Reserve the next free slot and sleep until it comes (True): one round trip, never a poll.

        Callers are served in the order they ask, across processes, so the order the queue started jobs in (its
        fairness between groups) is the order their calls go out. With `max_wait_s`, nothing is reserved and
        False comes back at once when the next free slot lies beyond it. A caller cancelled while it sleeps
        leaves its slot unused: the window then holds fewer calls, never more.
        """
        max_wait_ms = -1 if max_wait_s is None else max(0, int(max_wait_s * 1000))
        taken, wait_ms = await self._reserve(max_wait_ms)
        if not taken:
            return False
        self.stats.acquired += 1
        if wait_ms > 0:
            self.stats.waits += 1
            self.stats.wait_ms += wait_ms
            await asyncio.sleep(wait_ms / 1000)
        return True
