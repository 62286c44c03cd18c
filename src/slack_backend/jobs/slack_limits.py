"""Slack's per-workspace, per-method rate limits, shared by every worker process through the engine's call gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from slack_backend.queue import RateGate, RateLimit
from slack_backend.queue.connection import RedisClient

MINUTE_MS = 60_000
REPLIES = "conversations.replies"
USERS_INFO = "users.info"
# Slack counts a call when it arrives; ours are stamped when they leave, and an HTTP call's set-up on a loaded host
# varies by tens of ms (one 2 s window saw a read arrive 12 ms early against a 5 ms guard band). 1/30 of the window
# (2 s a minute), at least 250 ms, keeps calls apart at Slack's end for the cost of ~3% of the rate.
MIN_MARGIN_MS = 250
# A gate object per (workspace, method) is cheap, but the map of them is not left to grow without end.
MAX_GATES = 10_000


def slack_call_limits(*, marketplace_app: bool, minute_ms: int = MINUTE_MS) -> dict[str, RateLimit]:
    """The limits Slack posts for the methods a draft calls before the model (per workspace, per app).

    conversations.replies: 1 a minute per workspace for apps outside the Slack Marketplace (new installs since May
    2025, all since March 2026); Tier 3 (50 a minute) for Marketplace-approved apps. users.info: Tier 4 (100 a
    minute). `minute_ms` scales the minute (tests).
    """
    margin_ms = max(MIN_MARGIN_MS, minute_ms // 30)
    replies = 50 if marketplace_app else 1
    return {
        REPLIES: RateLimit(replies, minute_ms, margin_ms),
        USERS_INFO: RateLimit(100, minute_ms, margin_ms),
    }


class SlackCallLimiter:
    """At most each method's limit of calls per workspace, across all processes, so no call is answered 429.

    A 429 that still comes (another deployment of the app, a limit Slack changed) is honoured for everyone:
    `defer` blocks the workspace's method until its Retry-After has passed.
    """

    def __init__(self, redis: RedisClient, prefix: str, limits: Mapping[str, RateLimit]) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limits = dict(limits)
        self._gates: dict[tuple[str, str], RateGate] = {}

    def _base(self, workspace_id: str, method: str) -> str:
        # One hash tag per workspace and method: the gate's script touches one key, so any Cluster node serves it.
        return f"{{{self._prefix}:slack:{workspace_id}:{method}}}"

    def _gate(self, workspace_id: str, method: str, limit: RateLimit) -> RateGate:
        gate = self._gates.get((workspace_id, method))
        if gate is None:
            if len(self._gates) >= MAX_GATES:
                self._gates.clear()
            gate = RateGate(self._redis, self._base(workspace_id, method) + ":gate", limit, name=method)
            self._gates[(workspace_id, method)] = gate
        return gate

    async def permit(self, workspace_id: str, method: str, *, max_wait_s: float) -> bool:
        """Take a slot for one call, waiting at most `max_wait_s` for it: False (nothing taken) when it is further."""
        limit = self._limits.get(method)
        if limit is None:
            return True
        started = time.monotonic()
        blocked_ms = int(await self._redis.pttl(self._base(workspace_id, method) + ":until"))
        if blocked_ms > 0:
            if blocked_ms > max_wait_s * 1000:
                return False
            await asyncio.sleep(blocked_ms / 1000)
        remaining_s = max(0.0, max_wait_s - (time.monotonic() - started))
        return await self._gate(workspace_id, method, limit).acquire(max_wait_s=remaining_s)

    async def defer(self, workspace_id: str, method: str, delay_s: float) -> None:
        """Slack answered 429 with Retry-After `delay_s`: no process calls the method for the workspace until then."""
        await self._redis.set(self._base(workspace_id, method) + ":until", "1", px=max(1, int(delay_s * 1000)))
