"""The fake Slack's interactive side: views.open/update (trigger ids that expire and work once), chat.postMessage
as a user (user tokens and their scopes), chat.delete, and what each response_url did to its card."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.slack_server import FakeSlack

# Slack's trigger_id lasts 3 s and opens one view; a second use is `exchanged_trigger_id`.
TRIGGER_TTL_S = 3.0
# Slack's documented view limits: title 24 chars, 100 blocks, private_metadata 3,000, callback_id 255; a
# plain_text_input holds at most 3,000 chars; a message's text at most 40,000.
VIEW_TITLE_MAX_CHARS = 24
VIEW_MAX_BLOCKS = 100
PRIVATE_METADATA_MAX_CHARS = 3_000
CALLBACK_ID_MAX_CHARS = 255
INPUT_MAX_CHARS = 3_000
MESSAGE_TEXT_MAX_CHARS = 40_000


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A message the fake holds in a conversation: who posted it (a user, or the bot), where, and its text."""

    channel: str
    ts: str
    user: str
    text: str
    thread_ts: str | None
    token: str


class SlackUI:
    """State and handlers for the interactive methods; `FakeSlack.ui` holds one."""

    def __init__(self, slack: FakeSlack) -> None:
        self._slack = slack
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()
        self._view_ids = itertools.count(1)
        self._clicks = itertools.count(1)
        # view id -> the view as it is now (with its id and hash), and every view opened, in order.
        self.views: dict[str, dict[str, Any]] = {}
        self.opened: list[dict[str, Any]] = []
        self.messages: list[PostedMessage] = []
        # User token -> the scopes it was granted; channel -> its members (unlisted channels admit everyone).
        self.user_scopes: dict[str, set[str]] = {}
        self.members: dict[str, set[str]] = {}
        # response id -> what the message it belongs to shows now (None once deleted); unlisted: untouched.
        self.cards: dict[str, dict[str, Any] | None] = {}
        # response id -> when (time.monotonic()) each change of its card arrived: the user's clock for latency.
        self.card_changed_s: dict[str, list[float]] = {}

    def trigger_id(self, *, issued_at: float | None = None) -> str:
        """A trigger_id as Slack puts in an interaction payload: valid for 3 s from `issued_at`, once."""
        trigger = f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        self._triggers[trigger] = time.monotonic() if issued_at is None else issued_at
        return trigger

    def click_response_url(self) -> tuple[str, str]:
        """(response id, URL) of a fresh response_url for a click on an ephemeral card (replaceable)."""
        response_id = f"click{next(self._clicks)}"
        return response_id, self._slack.response_url(response_id)

    def user_token(self, user_id: str, scopes: tuple[str, ...] = ("chat:write",)) -> str:
        """A user token (xoxp) the fake accepts, posting as `user_id`, with `scopes`."""
        token = self._slack.issue_token("xoxp")
        self._slack._token_users[token] = user_id
        self.user_scopes[token] = set(scopes)
        return token

    def posted_as(self, user_id: str) -> list[PostedMessage]:
        """Messages posted with `user_id`'s own token, oldest first."""
        return [m for m in self.messages if m.user == user_id]

    def handle(self, method: str, params: dict[str, Any], token: str) -> web.Response | None:
        """The answer for an interactive method, or None to leave the call to FakeSlack's own handlers."""
        if method == "views.open":
            return self._views_open(params, token)
        if method == "views.update":
            return self._views_update(params)
        if method == "chat.postMessage" and token in self._slack._token_users:
            return self._post_as_user(params, token)
        if method == "chat.delete":
            return self._chat_delete(params, token)
        return None

    def on_response(self, response_id: str, params: dict[str, Any]) -> None:
        """Record what a response_url post did to its message: deleted it, replaced it, or left it."""
        if params.get("delete_original") is True or params.get("replace_original") is True:
            self.card_changed_s.setdefault(response_id, []).append(time.monotonic())
        if params.get("delete_original") is True:
            self.cards[response_id] = None
        elif params.get("replace_original") is True:
            self.cards[response_id] = {"text": params.get("text"), "blocks": params.get("blocks")}

    def _views_open(self, params: dict[str, Any], token: str) -> web.Response:
        if token in self._slack._token_users:
            return _fail("not_allowed_token_type")
        trigger = params.get("trigger_id")
        if not isinstance(trigger, str) or trigger not in self._triggers:
            return _fail("invalid_trigger_id")
        if trigger in self._used_triggers:
            return _fail("exchanged_trigger_id")
        if time.monotonic() - self._triggers[trigger] > TRIGGER_TTL_S:
            return _fail("expired_trigger_id")
        view, problem = _read_view(params.get("view"))
        if view is None:
            return _fail(problem or "invalid_arguments")
        self._used_triggers.add(trigger)
        view_id = f"V{next(self._view_ids):08d}"
        stored = {**view, "id": view_id, "hash": secrets.token_hex(8), "team_id": self._slack.team_id}
        self.views[view_id] = stored
        self.opened.append(stored)
        return _ok(view=stored)

    def _views_update(self, params: dict[str, Any]) -> web.Response:
        view_id = params.get("view_id")
        if not isinstance(view_id, str) or view_id not in self.views:
            return _fail("not_found")
        if params.get("hash") and params["hash"] != self.views[view_id]["hash"]:
            return _fail("hash_conflict")
        view, problem = _read_view(params.get("view"))
        if view is None:
            return _fail(problem or "invalid_arguments")
        stored = {**view, "id": view_id, "hash": secrets.token_hex(8), "team_id": self._slack.team_id}
        self.views[view_id] = stored
        return _ok(view=stored)

    def _post_as_user(self, params: dict[str, Any], token: str) -> web.Response:
        user = self._slack._token_users[token]
        scopes = self.user_scopes.get(token)
        if scopes is not None and "chat:write" not in scopes:
            return web.json_response({"ok": False, "error": "missing_scope", "needed": "chat:write"})
        channel = params.get("channel")
        if not isinstance(channel, str) or not channel:
            return _fail("channel_not_found")
        members = self.members.get(channel)
        if members is not None and user not in members:
            return _fail("not_in_channel")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return _fail("no_text")
        if len(text) > MESSAGE_TEXT_MAX_CHARS:
            return _fail("msg_too_long")
        ts = self._slack._next_ts()
        thread_ts = params.get("thread_ts") if isinstance(params.get("thread_ts"), str) else None
        self.messages.append(PostedMessage(channel, ts, user, text, thread_ts or None, token))
        message = {"type": "message", "user": user, "text": text, "ts": ts}
        if thread_ts:
            message["thread_ts"] = thread_ts
        return _ok(channel=channel, ts=ts, message=message)

    def _chat_delete(self, params: dict[str, Any], token: str) -> web.Response:
        channel, ts = params.get("channel"), params.get("ts")
        found = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not found:
            return _fail("message_not_found")
        # A user token deletes only its user's messages (admins aside, which this fake has none of).
        if self._slack._token_users.get(token, found[0].user) != found[0].user:
            return _fail("cant_delete_message")
        self.messages.remove(found[0])
        return _ok(channel=channel, ts=ts)


def _read_view(raw: object) -> tuple[dict[str, Any] | None, str | None]:
    """The view a call carries (JSON text or object), or (None, the error Slack answers) when Slack refuses it."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None, "invalid_arguments"
    if not isinstance(raw, dict) or raw.get("type") != "modal":
        return None, "invalid_arguments"
    title = raw.get("title")
    if not isinstance(title, dict) or not 0 < len(str(title.get("text", ""))) <= VIEW_TITLE_MAX_CHARS:
        return None, "invalid_arguments"
    blocks = raw.get("blocks")
    if not isinstance(blocks, list) or len(blocks) > VIEW_MAX_BLOCKS:
        return None, "invalid_arguments"
    if len(str(raw.get("private_metadata") or "")) > PRIVATE_METADATA_MAX_CHARS:
        return None, "invalid_arguments"
    if len(str(raw.get("callback_id") or "")) > CALLBACK_ID_MAX_CHARS:
        return None, "invalid_arguments"
    for block in blocks:
        element = block.get("element") if isinstance(block, dict) else None
        if isinstance(element, dict) and element.get("type") == "plain_text_input":
            limit = int(element.get("max_length") or INPUT_MAX_CHARS)
            if limit > INPUT_MAX_CHARS or len(str(element.get("initial_value") or "")) > limit:
                return None, "invalid_arguments"
    return raw, None


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _fail(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})
