"""A loopback fake of the Slack Web API and of response_url, scriptable per method, for the real slack_sdk."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

API_PREFIX = "/api/"
RESPONSE_PREFIX = "/response/"

# The method name under which calls to a response_url are recorded and scripted.
RESPONSE_URL_METHOD = "response_url"

# Slack allows five uses of one response_url (in 30 minutes); past that it answers 404 used_url.
RESPONSE_URL_MAX_USES = 5

# conversations.replies serves apps that are not Marketplace-approved at most this many messages a call.
NON_MARKETPLACE_LIMIT = 15


@dataclass(frozen=True, slots=True)
class SlackCall:
    """One call the fake received: Web API method (or "response_url"), token, and parameters.

    `params` merges the query string with the form or JSON body, as Slack itself reads both.
    """

    method: str
    http_method: str
    token: str | None
    params: dict[str, Any]
    content_type: str


@dataclass(frozen=True, slots=True)
class SlackReply:
    """A scripted answer: HTTP status, JSON body and headers."""

    status: int = 200
    body: Mapping[str, Any] = field(default_factory=lambda: {"ok": True})
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeSlack:
    """The fake server: start it with `async with FakeSlack() as slack:` and use `slack.base_url`.

    Serves auth.test, conversations.replies (threads registered with `add_thread`), chat.postEphemeral and
    chat.postMessage under `/api/`, and a response_url receiver at `/response/<id>`. Every call is recorded
    in `calls`; `fail_next` and its helpers script the next answers of a method.
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
        self.response_posts: dict[str, list[dict[str, Any]]] = {}
        self._scripts: dict[str, deque[SlackReply]] = {}
        self._ts = itertools.count(1)
        self._latency: dict[str, tuple[float, float]] = {}
        self._rng = random.Random(0)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

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

    def response_url(self, response_id: str) -> str:
        """A response_url pointing at this fake; posts to it are kept in `response_posts[response_id]`."""
        return f"{self.root_url}{RESPONSE_PREFIX}{response_id}"

    def calls_to(self, method: str) -> list[SlackCall]:
        """The recorded calls of one method (e.g. "chat.postEphemeral"), oldest first."""
        return [call for call in self.calls if call.method == method]

    def add_thread(self, channel: str, thread_ts: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """Register a thread for conversations.replies: messages (user, text, ts ...), parent first."""
        self.threads[(channel, thread_ts)] = [{"type": "message", "thread_ts": thread_ts, **m} for m in messages]

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
        self.calls.append(SlackCall(method, request.method, token, params, request.content_type))
        if method in self._latency:
            await asyncio.sleep(self._rng.uniform(*self._latency[method]))
        scripted = self._scripted(method)
        if scripted is not None:
            return scripted
        if token is None:
            return _fail("not_authed")
        if self.bot_token is not None and token != self.bot_token:
            return _fail("invalid_auth")
        handler = {
            "auth.test": self._auth_test,
            "conversations.replies": self._conversations_replies,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.postMessage": self._post_message,
        }.get(method)
        if handler is None:
            return _fail("unknown_method")
        return handler(params)

    async def _response_url(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        params = await _read_params(request)
        self.calls.append(SlackCall(RESPONSE_URL_METHOD, request.method, None, params, request.content_type))
        scripted = self._scripted(RESPONSE_URL_METHOD)
        if scripted is not None:
            return scripted
        posts = self.response_posts.setdefault(response_id, [])
        if len(posts) >= RESPONSE_URL_MAX_USES:
            return _fail("used_url", status=404)
        posts.append(params)
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

    def _conversations_replies(self, params: dict[str, Any]) -> web.Response:
        channel = _str_or_none(params.get("channel"))
        thread_ts = _str_or_none(params.get("ts"))
        if channel is None or thread_ts is None:
            return _fail("invalid_arguments")
        if not any(known_channel == channel for known_channel, _ in self.threads):
            return _fail("channel_not_found")
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


def _bearer(header: str | None) -> str | None:
    if header is None or not header.lower().startswith("bearer "):
        return None
    return header[len("bearer ") :].strip() or None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _fail(error: str, *, status: int = 200) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)
