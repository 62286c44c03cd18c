"""Bolt's OAuth authorization, its answer kept for a few minutes per installation and user.

Bolt authorizes every request before any listener runs: it reads the installation (decrypting its tokens) and
then calls Slack's auth.test, twice when the user has their own token. On a card click that is two round trips to
Slack before the click is even acknowledged. The answer changes only when tokens do, so it is kept per
(org, workspace, user) for `ttl_s`; the workers and Send as me still read tokens from the store at the moment of
use, so a revoked token is never used from here, and an uninstalled workspace's requests are refused again within
`ttl_s` (its jobs fail at once in the worker: no token).
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse

DEFAULT_TTL_S = 300.0
# One entry per clicking user: far above a service's active users, small in memory (ids and tokens).
DEFAULT_MAX_ENTRIES = 10_000

# Bolt's own listeners delete the tokens these events name; the kept answers go with them.
REVOCATION_EVENTS = frozenset({"tokens_revoked", "app_uninstalled"})

_Key = tuple[str | None, ...]


class CachedAuthorize(AsyncAuthorize):
    """Wraps Bolt's authorize (`inner`): an answer is reused for `ttl_s`, per the request's ids; refusals are not
    kept. Each caller gets its own copy, so no request can change another's."""

    def __init__(
        self,
        inner: AsyncAuthorize,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # AsyncAuthorize's own __init__ does nothing (and is untyped).
        self._inner = inner
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[_Key, tuple[float, AuthorizeResult]] = OrderedDict()

    def __repr__(self) -> str:
        # The entries hold tokens: never shown.
        return f"CachedAuthorize(entries={len(self._entries)}, ttl_s={self._ttl_s:g})"

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        install = "org" if context.is_enterprise_install else None
        key = (enterprise_id, team_id, user_id, install, actor_enterprise_id, actor_team_id, actor_user_id)
        now = self._clock()
        kept = self._entries.get(key)
        if kept is not None and kept[0] > now:
            return copy.copy(kept[1])
        result = await self._inner(
            context=context,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            actor_enterprise_id=actor_enterprise_id,
            actor_team_id=actor_team_id,
            actor_user_id=actor_user_id,
        )
        if result is None:
            self._entries.pop(key, None)
            return None
        self._entries[key] = (now + self._ttl_s, copy.copy(result))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return result

    def forget(self) -> None:
        """Drop every kept answer."""
        self._entries.clear()

    async def forget_on_revocation(
        self, body: Mapping[str, Any], next_: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        """Bolt middleware: a token revocation or an uninstall seen by this process drops every kept answer (other
        processes drop theirs within `ttl_s`)."""
        event = body.get("event")
        if isinstance(event, Mapping) and event.get("type") in REVOCATION_EVENTS:
            self.forget()
        return await next_()
