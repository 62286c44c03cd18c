"""The fake Slack's App Home and user methods: views.publish and conversations.history (user tokens); users.info is
slack_reads.py's (`FakeSlack.add_person`).

Kept apart from slack_server.py (several developers edit that file); FakeSlack owns one `SlackHome` as `home` and
routes these methods to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.views import View

# Slack's documented limits for views.publish: at most 100 blocks, and a view of at most 250 kB.
MAX_VIEW_BLOCKS = 100
MAX_VIEW_BYTES = 250_000
# Apps outside the Marketplace get at most 15 messages a conversations.history call.
HISTORY_LIMIT = 15


@dataclass
class SlackHome:
    """State of the Home-tab and user methods: published views, user profiles, conversation histories.

    `histories`: channel -> messages,
    newest first as Slack returns them. `members`: channel -> users whose own token may read it (the bot may not).
    `user_of_token`: the fake's map of issued user tokens to users (FakeSlack fills it at OAuth).
    """

    bot_token: str | None
    user_of_token: Mapping[str, str]
    published: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    home_tab_enabled: bool = True

    def add_history(self, channel: str, messages: Sequence[Mapping[str, Any]], *, members: Sequence[str]) -> None:
        """Register a conversation's messages (newest first) and the users who may read it with their token."""
        self.histories[channel] = [{"type": "message", **m} for m in messages]
        self.members[channel] = set(members)

    def latest_view(self, user_id: str) -> dict[str, Any]:
        """The view most recently published to the user's Home tab."""
        return self.published[user_id][-1]

    def handlers(self) -> dict[str, Callable[[dict[str, Any], str | None], web.Response]]:
        """Method name -> handler(params, token), for FakeSlack's router."""
        return {
            "views.publish": self._views_publish,
            "conversations.history": self._conversations_history,
        }

    def _views_publish(self, params: dict[str, Any], token: str | None) -> web.Response:
        if token in self.user_of_token:
            return _fail("not_allowed_token_type")
        user_id, raw = params.get("user_id"), params.get("view")
        if not isinstance(user_id, str) or not user_id or raw is None:
            return _fail("invalid_arguments", "[ERROR] missing required field: user_id or view")
        try:
            view = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            return _fail("invalid_arguments", "[ERROR] must provide an object [json-pointer:/view]")
        if not isinstance(view, dict):
            return _fail("invalid_arguments", "[ERROR] must provide an object [json-pointer:/view]")
        if len(json.dumps(view).encode()) > MAX_VIEW_BYTES:
            return _fail("view_too_large")
        problem = _view_problem(view)
        if problem is not None:
            return _fail("invalid_arguments", problem)
        if not self.home_tab_enabled:
            return _fail("not_enabled")
        self.published.setdefault(user_id, []).append(view)
        return _ok(view={"id": f"V{len(self.published[user_id]):08d}", "type": "home", **view})

    def _conversations_history(self, params: dict[str, Any], token: str | None) -> web.Response:
        channel = params.get("channel")
        if not isinstance(channel, str) or channel not in self.histories:
            return _fail("channel_not_found")
        reader = self.user_of_token.get(token or "")
        if reader is None or reader not in self.members.get(channel, set()):
            # The bot is in none of these conversations, and a user reads only where they are a member.
            return _fail("not_in_channel")
        limit = min(int(params.get("limit") or 100), HISTORY_LIMIT)
        messages = self.histories[channel][:limit]
        return _ok(messages=messages, has_more=len(self.histories[channel]) > limit)


def _view_problem(view: dict[str, Any]) -> str | None:
    """What Slack would refuse in a Home view, in its own wording where known; None when it is valid."""
    if view.get("type") != "home":
        return "[ERROR] must be home [json-pointer:/view/type]"
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return "[ERROR] missing required field: blocks [json-pointer:/view/blocks]"
    if len(blocks) > MAX_VIEW_BLOCKS:
        return "[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]"
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        return "[ERROR] duplicate block_id [json-pointer:/view/blocks]"
    action_ids = [e.get("action_id") for e in _elements(blocks) if e.get("action_id")]
    if len(action_ids) != len(set(action_ids)):
        return "[ERROR] duplicate action_id [json-pointer:/view/blocks]"
    try:
        View(**view).to_dict()  # to_dict validates every nested block and element, validate_json only the view
    except (SlackObjectFormationError, TypeError, KeyError) as exc:
        return f"[ERROR] {exc} [json-pointer:/view]"
    return None


def _elements(blocks: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                found.append(block[key])
        found += [e for e in block.get("elements") or [] if isinstance(e, dict)]
    return found


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _fail(error: str, message: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error": error}
    if message is not None:
        body["response_metadata"] = {"messages": [message]}
    return web.json_response(body)
