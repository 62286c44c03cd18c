"""The fake Slack's read methods, refusing what Slack refuses: conversations.replies (who may read which thread, and
the non-Marketplace limits), users.info (scope users:read, unknown users) and auth.revoke."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# conversations.replies serves apps that are not Marketplace-approved at most this many messages a call ...
NON_MARKETPLACE_LIMIT = 15
# ... and this many calls per window per workspace (Slack: 1 a minute); tests scale the window down.
NON_MARKETPLACE_READS = 1
NON_MARKETPLACE_WINDOW_S = 60.0
# Slack's answer to a bot token reading a channel's thread (bots may read only DMs and group DMs).
BOT_REFUSED_ERROR = "not_allowed_token_type"
# The user scope each kind of conversation needs for conversations.replies with a user token.
HISTORY_SCOPES = {"channel": "channels:history", "group": "groups:history", "im": "im:history", "mpim": "mpim:history"}


@dataclass
class Person:
    """A workspace member as users.info describes them."""

    user_id: str
    name: str
    real_name: str = ""
    display_name: str = ""
    tz: str | None = None


@dataclass
class SlackReads:
    """The state behind the read methods: who is in the workspace, which conversations are group DMs, the
    per-workspace read window, and each issued token's scopes (a token with none recorded is not checked)."""

    team_id: str
    marketplace_app: Callable[[], bool]
    reads_per_window: int = NON_MARKETPLACE_READS
    window_s: float = NON_MARKETPLACE_WINDOW_S
    people: dict[str, Person] = field(default_factory=dict)
    mpims: set[str] = field(default_factory=set)
    token_scopes: dict[str, frozenset[str]] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)
    # Receive times (monotonic s) of the conversations.replies calls served, and of those refused with 429.
    served_at: list[float] = field(default_factory=list)
    refused_429_at: list[float] = field(default_factory=list)
    _window: deque[float] = field(default_factory=deque)

    def kind_of(self, channel: str) -> str:
        """Slack's kind of conversation by its id: D... a DM, C... a channel, G... a group DM or private channel."""
        if channel.startswith("D"):
            return "im"
        if channel.startswith("G"):
            return "mpim" if channel in self.mpims else "group"
        return "channel"

    def refuse_replies(self, token: str, channel: str) -> web.Response | None:
        """Slack's refusal of this token reading this conversation's threads (None: it may), spending the limit."""
        kind = self.kind_of(channel)
        if token.startswith("xoxb-") and kind not in ("im", "mpim"):
            return _fail(BOT_REFUSED_ERROR)
        scopes = self.token_scopes.get(token)
        if token.startswith("xoxp-") and scopes is not None and HISTORY_SCOPES[kind] not in scopes:
            return _fail("missing_scope", needed=HISTORY_SCOPES[kind], provided=",".join(sorted(scopes)))
        if self.marketplace_app():
            return None
        now = time.monotonic()
        while self._window and now - self._window[0] >= self.window_s:
            self._window.popleft()
        if len(self._window) >= self.reads_per_window:
            self.refused_429_at.append(now)
            retry_after = max(1, math.ceil(self.window_s - (now - self._window[0])))
            body = {"ok": False, "error": "ratelimited"}
            return web.json_response(body, status=429, headers={"Retry-After": str(retry_after)})
        self._window.append(now)
        self.served_at.append(now)
        return None

    def users_info(self, token: str, params: Mapping[str, Any]) -> web.Response:
        """users.info: the member's name and time zone; `user_not_found` for anyone else."""
        scopes = self.token_scopes.get(token)
        if scopes is not None and "users:read" not in scopes:
            return _fail("missing_scope", needed="users:read", provided=",".join(sorted(scopes)))
        user_id = params.get("user")
        person = self.people.get(user_id) if isinstance(user_id, str) else None
        if person is None:
            return _fail("user_not_found")
        profile = {"real_name": person.real_name or person.name, "display_name": person.display_name}
        user: dict[str, Any] = {"id": person.user_id, "team_id": self.team_id, "name": person.name}
        user |= {"real_name": profile["real_name"], "profile": profile, "deleted": False}
        if person.tz is not None:
            user |= {"tz": person.tz, "tz_label": person.tz, "tz_offset": 0}
        return web.json_response({"ok": True, "user": user})

    def auth_revoke(self, token: str) -> web.Response:
        """auth.revoke: the token stops working (the caller forgets it); Slack answers `revoked: true`."""
        self.revoked.append(token)
        return web.json_response({"ok": True, "revoked": True})


def _fail(error: str, **fields: str) -> web.Response:
    return web.json_response({"ok": False, "error": error, **fields})
