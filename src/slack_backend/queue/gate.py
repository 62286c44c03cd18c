"""RateGate: a cross-process sliding-window limiter that a running job takes a slot of right before an upstream call.

The queue's start limit (fetch) decides which job goes next; the gate bounds what the upstream API sees, since
the work between a start and the call (a quota check, a token lookup, a thread read) varies by hundreds of ms.
"""

from __future__ import annotations

import asyncio
import time
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

    Each acquisition holds its slot for `duration_ms + margin_ms`, so jitter between the moment Redis stamps it
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

    async def try_acquire(self) -> int:
        """Take a slot if the window has room: 0 when taken, else the ms until one frees (nothing is taken)."""
        reply = await self._script(keys=[self.key], args=[self.limit.max, self.hold_ms])
        taken, value = (int(x) for x in reply)
        return 0 if taken else max(1, value)

    async def acquire(self, *, max_wait_s: float | None = None) -> bool:
        """Wait until a slot is taken (True), sleeping exactly until one frees, never polling.

        With `max_wait_s`, give up (False, nothing taken) as soon as the next free slot lies beyond that budget.
        Several waiters woken by the same freed slot race for it; the losers sleep again until the next one.
        """
        started = time.monotonic()
        waited = False
        try:
            while True:
                wait_ms = await self.try_acquire()
                if wait_ms == 0:
                    self.stats.acquired += 1
                    return True
                if max_wait_s is not None and time.monotonic() - started + wait_ms / 1000 > max_wait_s:
                    return False
                if not waited:
                    waited = True
                    self.stats.waits += 1
                await asyncio.sleep(wait_ms / 1000)
        finally:
            if waited:
                self.stats.wait_ms += int((time.monotonic() - started) * 1000)
