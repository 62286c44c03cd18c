"""A loopback fake of the Slack Web API and of response_url, scriptable per method, for the real slack_sdk."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.fakes.slack_home import SlackHome
from tests.fakes.slack_reads import NON_MARKETPLACE_LIMIT, Person, SlackReads
from tests.fakes.slack_views import SlackUI

API_PREFIX = "/api/"
RESPONSE_PREFIX = "/response/"

# The method name under which calls to a response_url are recorded and scripted.
RESPONSE_URL_METHOD = "response_url"

# Slack allows five uses of one response_url (in 30 minutes); past that it answers 404 used_url.
RESPONSE_URL_MAX_USES = 5

# A message shortcut's response_url has no message of the app's to replace or delete: its "original" is the
# message the shortcut was used on, someone else's. This fake refuses such a post unless it says
# `replace_original: false` (the conservative reading; Slack's default differs between interactions), with
# this error (the fake's wording).
CANNOT_REPLACE_ERROR = "cannot_replace_original"
_RESPONSE_TYPES = frozenset({"ephemeral", "in_channel"})
__all__ = ["NON_MARKETPLACE_LIMIT", "FakeSlack", "OAuthGrant", "Person", "SlackCall", "SlackReply"]


@dataclass(frozen=True, slots=True)
class SlackCall:
    """One call the fake received: Web API method (or "response_url"), token, and parameters.

    `params` merges the query string with the form or JSON body, as Slack itself reads both. `peer` is the client's
    address and port: one per TCP connection, so calls with the same `peer` came over one kept-alive connection.
    `received_s`: this process's `time.monotonic()` as the fake began to handle the call (before `slow_down`).
    """

    method: str
    http_method: str
    token: str | None
    params: dict[str, Any]
    content_type: str
    peer: tuple[str, int] | None = None
    received_s: float = 0.0


@dataclass(slots=True)
class OAuthGrant:
    """What one approval on Slack's authorize page grants: a bot token and/or the approving user's own token."""

    team_id: str
    user_id: str
    bot_scopes: tuple[str, ...]
    user_scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SlackReply:
    """A scripted answer: HTTP status, JSON body and headers."""

    status: int = 200
    body: Mapping[str, Any] = field(default_factory=lambda: {"ok": True})
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeSlack:
    """The fake server: start it with `async with FakeSlack() as slack:` and use `slack.base_url`.

    Serves auth.test, conversations.replies (threads registered with `add_thread`; refused as Slack refuses, see
    `reads`), users.info (`add_person`), auth.revoke, chat.postEphemeral, chat.postMessage, reactions.add/remove
    and (after `enable_oauth`) oauth.v2.access with code and refresh grants
    under `/api/`, and a response_url receiver at `/response/<id>`. Every call is recorded in `calls`; `fail_next`
    and its helpers script the next answers of a method.
    """

    def __init__(
        self,
        *,
        bot_token: str | None = None,
        team_id: str = "T0FAKE",
        bot_user_id: str = "U0FAKEBOT",
        host: str = "127.0.0.1",
        marketplace_app: bool = False,
    ) -> None:
        """Args: bot_token: when set, calls with another token get `invalid_auth` (no token: `not_authed`)."""
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.host = host
        self.calls: list[SlackCall] = []
        self.threads: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # Slack's limits for conversations.replies differ for apps approved for the Slack Marketplace.
        self.marketplace_app = marketplace_app
        # Who may read which thread, the per-workspace read limit, users.info's people (tests/fakes/slack_reads.py).
        self.reads = SlackReads(team_id, marketplace_app=lambda: self.marketplace_app)
        self.response_posts: dict[str, list[dict[str, Any]]] = {}
        # (channel, message ts, emoji name) of each reaction the app has on a message now.
        self.reactions: set[tuple[str, str, str]] = set()
        self._foreign_originals: set[str] = set()
        self._scripts: dict[str, deque[SlackReply]] = {}
        self._ts = itertools.count(1)
        # OAuth (enable_oauth): the app's credentials, unused codes, live refresh tokens, and issued tokens' expiry.
        self.client_id: str | None = None
        self.client_secret: str | None = None
        self.rotate_tokens = False
        self.expires_in_s = 43_200
        self._codes: dict[str, OAuthGrant] = {}
        self._refresh: dict[str, tuple[str, str]] = {}  # refresh token -> (kind "bot"/"user", team id)
        self.issued_tokens: dict[str, float | None] = {}  # token -> expiry (epoch s), None when it never expires
        self._token_users: dict[str, str] = {}  # issued user token -> the user it belongs to
        self._latency: dict[str, tuple[float, float]] = {}
        self.home = SlackHome(bot_token, self._token_users)  # views.publish, users.info, conversations.history
        self._rng = random.Random(0)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        # views.open/update, chat.postMessage as a user, chat.delete, and what response_urls did to cards.
        self.ui = SlackUI(self)

    @property
    def port(self) -> int:
        """The TCP port the fake listens on (only once started)."""
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """The server's root, without the API path."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The value for `AsyncWebClient(base_url=...)`; ends with "/" as slack_sdk requires."""
        return f"{self.root_url}{API_PREFIX}"

    def response_url(self, response_id: str, *, replaceable: bool = True) -> str:
        """A response_url pointing at this fake; posts to it are kept in `response_posts[response_id]`.

        `replaceable=False`: a message shortcut's URL, whose original message is not the app's, so any post that
        does not say `replace_original: false` (or asks `delete_original`) is refused with CANNOT_REPLACE_ERROR.
        """
        if not replaceable:
            self._foreign_originals.add(response_id)
        return f"{self.root_url}{RESPONSE_PREFIX}{response_id}"

    def calls_to(self, method: str) -> list[SlackCall]:
        """The recorded calls of one method (e.g. "chat.postEphemeral"), oldest first."""
        return [call for call in self.calls if call.method == method]

    def add_thread(
        self, channel: str, thread_ts: str, messages: Sequence[Mapping[str, Any]], *, mpim: bool = False
    ) -> None:
        """Register a thread for conversations.replies: messages (user, text, ts ...), parent first.

        Bot tokens may read it only in a DM (D...) or a group DM (`mpim=True`); channel threads need a user token.
        """
        self.threads[(channel, thread_ts)] = [{"type": "message", "thread_ts": thread_ts, **m} for m in messages]
        if mpim:
            self.reads.mpims.add(channel)

    def add_person(self, user_id: str, name: str, *, tz: str | None = None, display_name: str = "") -> None:
        """A workspace member users.info knows (anyone else is `user_not_found`)."""
        self.reads.people[user_id] = Person(user_id, name, display_name=display_name, tz=tz)

    def limit_thread_reads(self, reads: int, window_s: float) -> None:
        """Serve `reads` conversations.replies calls per `window_s` per workspace (Slack: 1 a minute), then 429."""
        self.reads.reads_per_window, self.reads.window_s = reads, window_s

    def enable_oauth(
        self, client_id: str, client_secret: str, *, rotate_tokens: bool = False, expires_in_s: int = 43_200
    ) -> None:
        """Serve oauth.v2.access for this app; with `rotate_tokens`, tokens expire and come with refresh tokens."""
        self.client_id, self.client_secret = client_id, client_secret
        self.rotate_tokens, self.expires_in_s = rotate_tokens, expires_in_s

    def approve(
        self, *, user_id: str, bot_scopes: Sequence[str] = ("commands",), user_scopes: Sequence[str] = ()
    ) -> str:
        """A user approves the app on Slack's authorize page: the one-time code Slack sends to the redirect URL."""
        code = f"code-{secrets.token_hex(8)}"
        self._codes[code] = OAuthGrant(self.team_id, user_id, tuple(bot_scopes), tuple(user_scopes))
        return code

    def issue_token(self, prefix: str, *, expires_in_s: int | None = None) -> str:
        """A token this fake accepts from now on (until its expiry, when given)."""
        token = f"{prefix}-{secrets.token_hex(12)}"
        self.issued_tokens[token] = None if expires_in_s is None else time.time() + expires_in_s
        return token

    def issue_refresh_token(self, kind: str) -> str:
        """A refresh token for a `kind` ("bot" or "user") token of this fake's team; each works once."""
        refresh = f"xoxe-1-{secrets.token_hex(16)}"
        self._refresh[refresh] = (kind, self.team_id)
        return refresh

    def fail_next(
        self,
        method: str,
        *,
        error: str = "internal_error",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with `{"ok": false, "error": error}` and `status`."""
        self.script(method, SlackReply(status, {"ok": False, "error": error}, dict(headers or {})), times=times)

    def rate_limit_next(self, method: str, *, retry_after_s: int = 1, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with 429, Retry-After and error "ratelimited"."""
        self.fail_next(
            method, error="ratelimited", status=429, headers={"Retry-After": str(retry_after_s)}, times=times
        )

    def server_error_next(self, method: str, *, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with a 5xx."""
        self.fail_next(method, error="fatal_error", status=status, times=times)

    def slow_down(self, method: str, low_s: float, high_s: float) -> None:
        """Answer every call of `method` after a delay drawn uniformly from [low_s, high_s] (seeded, repeatable).

        Real Slack answers a thread read in 50-500 ms; the variable delay is what spreads jobs started together.
        """
        self._latency[method] = (low_s, high_s)

    def script(self, method: str, reply: SlackReply, *, times: int = 1) -> None:
        """Queue `reply` for the next `times` calls of `method` (or of "response_url")."""
        self._scripts.setdefault(method, deque()).extend([reply] * times)

    async def start(self) -> None:
        """Listen on a free port of `host`."""
        app = web.Application()
        app.router.add_route("*", API_PREFIX + "{method}", self._api)
        app.router.add_post(RESPONSE_PREFIX + "{response_id}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening and release every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = _bearer(request.headers.get("Authorization")) or _str_or_none(params.pop("token", None))
        self.calls.append(
            SlackCall(method, request.method, token, params, request.content_type, _peer(request), time.monotonic())
        )
        if method in self._latency:
            await asyncio.sleep(self._rng.uniform(*self._latency[method]))
        scripted = self._scripted(method)
        if scripted is not None:
            return scripted
        if method == "oauth.v2.access":
            return self._oauth_v2_access(params, request.headers.get("Authorization"))
        if token is None:
            return _fail("not_authed")
        if token in self.reads.revoked:
            return _fail("token_revoked")
        if token in self.issued_tokens:
            expiry = self.issued_tokens[token]
            if expiry is not None and time.time() >= expiry:
                return _fail("token_expired")
        elif self.bot_token is not None and token != self.bot_token:
            return _fail("invalid_auth")
        if method == "auth.test" and token in self._token_users:
            # A user token answers as its user, with no bot.
            return _ok(team_id=self.team_id, user_id=self._token_users[token], is_enterprise_install=False)
        interactive = self.ui.handle(method, params, token)
        if interactive is not None:
            return interactive
        handler = {
            "auth.test": self._auth_test,
            "conversations.replies": lambda params: self._conversations_replies(token, params),
            "users.info": lambda params: self.reads.users_info(token, params),
            "auth.revoke": lambda params: self.reads.auth_revoke(token),
            "chat.postEphemeral": self._post_ephemeral,
            "chat.postMessage": self._post_message,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }.get(method)
        if handler is None:
            home = self.home.handlers().get(method)
            return _fail("unknown_method") if home is None else home(params, token)
        return handler(params)

    async def _response_url(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        params = await _read_params(request)
        self.calls.append(
            SlackCall(
                RESPONSE_URL_METHOD,
                request.method,
                None,
                params,
                request.content_type,
                _peer(request),
                time.monotonic(),
            )
        )
        scripted = self._scripted(RESPONSE_URL_METHOD)
        if scripted is not None:
            return scripted
        posts = self.response_posts.setdefault(response_id, [])
        if len(posts) >= RESPONSE_URL_MAX_USES:
            return _fail("used_url", status=404)
        if params.get("response_type", "ephemeral") not in _RESPONSE_TYPES:
            return _fail("invalid_response_type", status=400)
        if response_id in self._foreign_originals and (
            params.get("replace_original") is not False or params.get("delete_original") is True
        ):
            return _fail(CANNOT_REPLACE_ERROR, status=400)
        posts.append(params)
        self.ui.on_response(response_id, params)
        return web.json_response({"ok": True})

    def _scripted(self, method: str) -> web.Response | None:
        queue = self._scripts.get(method)
        if not queue:
            return None
        reply = queue.popleft()
        return web.json_response(dict(reply.body), status=reply.status, headers=dict(reply.headers))

    def _auth_test(self, params: dict[str, Any]) -> web.Response:
        return _ok(
            url="https://fake-workspace.slack.com/",
            team="Fake Workspace",
            user="fakebot",
            team_id=self.team_id,
            user_id=self.bot_user_id,
            bot_id="B0FAKEBOT",
            is_enterprise_install=False,
        )

    def _conversations_replies(self, token: str, params: dict[str, Any]) -> web.Response:
        channel = _str_or_none(params.get("channel"))
        thread_ts = _str_or_none(params.get("ts"))
        if channel is None or thread_ts is None:
            return _fail("invalid_arguments")
        if not any(known_channel == channel for known_channel, _ in self.threads):
            return _fail("channel_not_found")
        refused = self.reads.refuse_replies(token, channel)
        if refused is not None:
            return refused
        messages = self.threads.get((channel, thread_ts))
        if messages is None:
            return _fail("thread_not_found")
        start = int(_str_or_none(params.get("cursor")) or 0)
        limit = int(_str_or_none(params.get("limit")) or 1000)
        if not self.marketplace_app:
            # Slack serves an app that is not Marketplace-approved at most 15 messages a call, whatever it asks.
            limit = min(limit, NON_MARKETPLACE_LIMIT)
        page = messages[start : start + limit]
        has_more = start + limit < len(messages)
        next_cursor = str(start + limit) if has_more else ""
        return _ok(messages=page, has_more=has_more, response_metadata={"next_cursor": next_cursor})

    def _post_ephemeral(self, params: dict[str, Any]) -> web.Response:
        missing = _missing_target(params, need_user=True)
        if missing is not None:
            return missing
        return _ok(message_ts=self._next_ts())

    def _post_message(self, params: dict[str, Any]) -> web.Response:
        missing = _missing_target(params, need_user=False)
        if missing is not None:
            return missing
        ts = self._next_ts()
        message = {"type": "message", "user": self.bot_user_id, "text": params.get("text", ""), "ts": ts}
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        return _ok(channel=params["channel"], ts=ts, message=message)

    def _reactions_add(self, params: dict[str, Any]) -> web.Response:
        key = _reaction_key(params)
        if key is None:
            return _fail("invalid_arguments")
        if key in self.reactions:
            return _fail("already_reacted")
        self.reactions.add(key)
        return _ok()

    def _reactions_remove(self, params: dict[str, Any]) -> web.Response:
        key = _reaction_key(params)
        if key is None:
            return _fail("invalid_arguments")
        if key not in self.reactions:
            return _fail("no_reaction")
        self.reactions.discard(key)
        return _ok()

    def _oauth_v2_access(self, params: dict[str, Any], authorization: str | None) -> web.Response:
        client_id, client_secret = _basic(authorization) or (params.get("client_id"), params.get("client_secret"))
        if self.client_id is None or (client_id, client_secret) != (self.client_id, self.client_secret):
            return _fail("invalid_client_id" if client_id != self.client_id else "bad_client_secret")
        if params.get("grant_type") == "refresh_token":
            return self._refresh_grant(_str_or_none(params.get("refresh_token")))
        grant = self._codes.pop(_str_or_none(params.get("code")) or "", None)
        if grant is None:
            return _fail("invalid_code")  # unknown, or used already: a code works once
        team = {"id": grant.team_id, "name": "Fake Workspace"}
        body: dict[str, Any] = {"app_id": "A0APP1", "team": team, "enterprise": None, "is_enterprise_install": False}
        if grant.bot_scopes:
            body |= {"token_type": "bot", "scope": ",".join(grant.bot_scopes), "bot_user_id": self.bot_user_id}
            body |= self._token_fields("bot", "xoxb")
        authed_user: dict[str, Any] = {"id": grant.user_id}
        if grant.user_scopes:
            authed_user |= {"scope": ",".join(grant.user_scopes), "token_type": "user"}
            authed_user |= self._token_fields("user", "xoxp")
            self._token_users[authed_user["access_token"]] = grant.user_id
            self.reads.token_scopes[authed_user["access_token"]] = frozenset(grant.user_scopes)
            self.ui.user_scopes[authed_user["access_token"]] = set(grant.user_scopes)
        return _ok(**body, authed_user=authed_user)

    def _refresh_grant(self, refresh_token: str | None) -> web.Response:
        known = self._refresh.pop(refresh_token or "", None)
        if known is None:
            return _fail("invalid_refresh_token")
        kind, team_id = known
        fields = self._token_fields(kind, "xoxb" if kind == "bot" else "xoxp", rotating=True)
        return _ok(token_type=kind, team={"id": team_id, "name": "Fake Workspace"}, enterprise=None, **fields)

    def _token_fields(self, kind: str, prefix: str, *, rotating: bool = False) -> dict[str, Any]:
        if not (self.rotate_tokens or rotating):
            return {"access_token": self.issue_token(prefix)}
        return {
            "access_token": self.issue_token(f"{prefix}e", expires_in_s=self.expires_in_s),
            "refresh_token": self.issue_refresh_token(kind),
            "expires_in": self.expires_in_s,
        }

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {}
        if isinstance(body, dict):
            params.update(body)
    elif request.can_read_body:
        # Covers application/x-www-form-urlencoded and multipart/form-data; file parts are not kept.
        form = await request.post()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def _missing_target(params: Mapping[str, Any], *, need_user: bool) -> web.Response | None:
    if not params.get("channel"):
        return _fail("channel_not_found")
    if need_user and not params.get("user"):
        return _fail("user_not_in_channel")
    if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
        return _fail("no_text")
    return None


def _reaction_key(params: Mapping[str, Any]) -> tuple[str, str, str] | None:
    channel, ts, name = (_str_or_none(params.get(key)) for key in ("channel", "timestamp", "name"))
    if channel is None or ts is None or name is None:
        return None
    return channel, ts, name


def _bearer(header: str | None) -> str | None:
    if header is None or not header.lower().startswith("bearer "):
        return None
    return header[len("bearer ") :].strip() or None


def _basic(header: str | None) -> tuple[str, str] | None:
    if header is None or not header.lower().startswith("basic "):
        return None
    user, _, password = base64.b64decode(header[len("basic ") :]).decode().partition(":")
    return user, password


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _fail(error: str, *, status: int = 200) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)


def _peer(request: web.Request) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return (str(peer[0]), int(peer[1])) if peer else None
