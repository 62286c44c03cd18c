"""RateGate: a cross-process sliding-window limiter that a running job takes a slot of right before an upstream call.

The queue's start limit (fetch) decides which job goes next; the gate bounds what the upstream API sees, since
the work between a start and the call (a quota check, a token lookup, a thread read) varies by hundreds of ms.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from slack_backend.queue._scripts import keyed_script
from slack_backend.queue.connection import RedisClient
from slack_backend.queue.limits import RateLimit

# How many times in a row a slot is confirmed again because its reply came back slower than the guard band.
MAX_STALE_CONFIRMS = 3


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

    def __init__(self, redis: RedisClient, key: str, limit: RateLimit, *, name: str = "") -> None:
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

    async def _call(self, token: str, mode: str, max_wait_ms: int = -1) -> tuple[bool, int]:
        args: list[str | int] = [self.limit.max, self.hold_ms, token, mode, max_wait_ms]
        reply = [int(x) for x in await self._script(keys=[self.key], args=args)]
        if reply[0] < 0:
            return False, max(1, reply[1])
        return True, reply[0]

    async def try_acquire(self) -> int:
        """Take a slot if one is free now: 0 when taken, else the ms until one frees (nothing is taken)."""
        taken, wait_ms = await self._call(uuid.uuid4().hex, "reserve", 0)
        return 0 if taken else wait_ms

    async def acquire(self, *, max_wait_s: float | None = None) -> bool:
        """Reserve the next free slot, sleep until it comes, confirm it (True): never a poll.

        Callers are served in the order they ask, across processes, so the order the queue started jobs in (its
        fairness between groups) is the order their calls go out. A caller that wakes late (a busy event loop)
        moves its slot to when it really goes, and whoever it then crowds waits the difference at its confirm:
        the limit holds for the moments calls go out, not the moments they were planned. With `max_wait_s`,
        nothing is reserved and False comes back at once when the next free slot lies beyond it. A caller
        cancelled while it sleeps leaves its reservation unused: the window then holds fewer calls, never more.
        """
        token = uuid.uuid4().hex
        max_wait_ms = -1 if max_wait_s is None else max(0, int(max_wait_s * 1000))
        sent = time.monotonic()
        taken, wait_ms = await self._call(token, "reserve", max_wait_ms)
        if not taken:
            return False
        self.stats.acquired += 1
        if wait_ms > 0:
            self.stats.waits += 1
        # A slot is stamped by the Redis clock when the script runs; the caller goes when the reply is read. A
        # process descheduled in between (tens of ms on a loaded host) would go on a stale stamp, late, into the
        # next caller's window: a reply slower than the guard band is confirmed again (a few times at most),
        # moving the slot to now. Without a guard band there is nothing to compare with.
        stale_confirms = 0
        while True:
            if wait_ms > 0:
                self.stats.wait_ms += wait_ms
                await asyncio.sleep(wait_ms / 1000)
            elif not self._stale(sent) or stale_confirms >= MAX_STALE_CONFIRMS:
                return True
            else:
                stale_confirms += 1
            sent = time.monotonic()
            _, wait_ms = await self._call(token, "confirm")

    def _stale(self, sent: float) -> bool:
        margin_ms = self.limit.margin_ms
        return margin_ms > 0 and (time.monotonic() - sent) * 1000 > margin_ms
