"""A loopback fake of the Anthropic Messages API, scriptable per request, for the real SDK in tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

# How much of the last user message the default draft echoes: enough to assert on, short enough to read.
ECHO_CHARS = 80


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received: path, headers (lower-cased names), the JSON body, and when it arrived.

    `received_s` is this process's `time.monotonic()` as the handler began: the API's own clock, on which a
    rate limit is counted (the fake runs in the test's process, so every worker process is measured alike).
    """

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_s: float = 0.0

    @property
    def api_key(self) -> str | None:
        """The key the client presented: `x-api-key`, or a bearer token (newer SDKs send the key that way)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        authorization = self.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[len("bearer ") :].strip()
        return None


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the fake answers one request. The class methods build the usual cases.

    A status of 200 answers with a message (the default draft, or `text`); any other status answers with
    the API's error body `{"type": "error", "error": {"type": error_type, "message": error_message}}`.
    `delay_s` sleeps before answering (a "hang" when it outlasts the client's timeout). `body`, when given, is
    sent as the 200 answer's body byte for byte (JSON content type), as a broken proxy or a new block type would.
    """

    status: int = 200
    text: str | None = None
    error_type: str = ""
    error_message: str = ""
    error_code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    stop_reason: str = "end_turn"
    body: bytes | None = None

    @classmethod
    def success(cls, *, text: str | None = None, headers: Mapping[str, str] | None = None) -> Behaviour:
        """A normal message; `headers` may carry `anthropic-ratelimit-*` values."""
        return cls(text=text, headers=dict(headers or {}))

    @classmethod
    def rate_limited(cls, *, retry_after_s: float | None = 2, headers: Mapping[str, str] | None = None) -> Behaviour:
        """429 rate_limit_error with a `retry-after` header (seconds) unless `retry_after_s` is None."""
        all_headers = dict(headers or {})
        if retry_after_s is not None:
            all_headers["retry-after"] = _header_number(retry_after_s)
        return cls(
            status=429,
            error_type="rate_limit_error",
            error_message="Number of request tokens has exceeded your per-minute rate limit.",
            headers=all_headers,
        )

    @classmethod
    def spend_limited(cls, *, error_code: str | None = "enforced_spend_limit_reached") -> Behaviour:
        """429 whose message says the spend limit was reached; `error_code=None` leaves out error.details."""
        return cls(
            status=429,
            error_type="rate_limit_error",
            error_message="Your organization has reached its enforced spend limit for this month.",
            error_code=error_code,
        )

    @classmethod
    def overloaded(cls) -> Behaviour:
        """529 overloaded_error."""
        return cls(status=529, error_type="overloaded_error", error_message="Overloaded")

    @classmethod
    def server_error(cls, status: int = 500) -> Behaviour:
        """500 (or another 5xx) api_error."""
        return cls(status=status, error_type="api_error", error_message="Internal server error")

    @classmethod
    def bad_request(cls, message: str = "messages: at least one message is required") -> Behaviour:
        """400 invalid_request_error."""
        return cls(status=400, error_type="invalid_request_error", error_message=message)

    @classmethod
    def unauthorized(cls) -> Behaviour:
        """401 authentication_error, as for a wrong API key."""
        return cls(status=401, error_type="authentication_error", error_message="invalid x-api-key")

    @classmethod
    def forbidden(cls) -> Behaviour:
        """403 permission_error."""
        return cls(
            status=403,
            error_type="permission_error",
            error_message="Your API key does not have permission to use the specified resource.",
        )

    @classmethod
    def not_found(cls) -> Behaviour:
        """404 not_found_error, as for an unknown model."""
        return cls(status=404, error_type="not_found_error", error_message="model: no-such-model")

    @classmethod
    def hang(cls, delay_s: float = 30.0) -> Behaviour:
        """Answer normally, but only after `delay_s` (closing the fake cuts the wait short)."""
        return cls(delay_s=delay_s)


class FakeAnthropic:
    """The fake server: start it with `async with FakeAnthropic() as fake:` and use `fake.base_url`.

    Every request is recorded in `requests`. `script()` queues behaviours for the next requests to a path;
    when the queue is empty the fake answers with a draft derived from the prompt.
    """

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1") -> None:
        """Args: api_key: when set, requests without this `x-api-key` get a 401 (like the real API)."""
        self.api_key = api_key
        self.host = host
        self.requests: list[RecordedRequest] = []
        # The `usage` of every Messages reply sent, in order: what a client should report back as its token counts.
        self.usages: list[dict[str, int]] = []
        self._scripts: dict[str, deque[Behaviour]] = {}
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port the fake listens on (only once started)."""
        if self._port is None:
            raise RuntimeError("FakeAnthropic is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The value for `AsyncAnthropic(base_url=...)`."""
        return f"http://{self.host}:{self.port}"

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The recorded `POST /v1/messages` requests, oldest first."""
        return [request for request in self.requests if request.path == MESSAGES_PATH]

    def open_connections(self) -> int:
        """How many client connections the fake holds open now (0 once stopped)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def script(self, *behaviours: Behaviour, path: str = MESSAGES_PATH) -> None:
        """Queue behaviours for the next requests to `path`, one each, in order."""
        self._scripts.setdefault(path, deque()).extend(behaviours)

    async def start(self) -> None:
        """Listen on a free port of `host`."""
        app = web.Application()
        app.router.add_post(MESSAGES_PATH, self._messages)
        app.router.add_post(COUNT_TOKENS_PATH, self._count_tokens)
        # handler_cancellation: a client that gives up (a timeout) ends its hung handler at once.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening and release every connection; hung requests return at once."""
        self._closing.set()
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

    async def _record(self, request: web.Request) -> dict[str, Any] | None:
        received_s = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = None
        self.requests.append(
            RecordedRequest(
                path=request.path,
                headers={name.lower(): value for name, value in request.headers.items()},
                body=body if isinstance(body, dict) else {},
                received_s=received_s,
            )
        )
        return body if isinstance(body, dict) else None

    def _next_behaviour(self, path: str) -> Behaviour:
        queue = self._scripts.get(path)
        return queue.popleft() if queue else Behaviour()

    async def _preamble(self, request: web.Request, path: str) -> tuple[dict[str, Any], Behaviour] | web.Response:
        body = await self._record(request)
        if body is None:
            return _error(400, "invalid_request_error", "request body is not a JSON object")
        if self.api_key is not None and self.requests[-1].api_key != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        behaviour = self._next_behaviour(path)
        if behaviour.delay_s > 0:
            # Closing the fake ends the wait early, so a hung request never delays teardown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=behaviour.delay_s)
        if behaviour.status != 200:
            return _error(
                behaviour.status,
                behaviour.error_type,
                behaviour.error_message,
                error_code=behaviour.error_code,
                headers=behaviour.headers,
            )
        return body, behaviour

    async def _messages(self, request: web.Request) -> web.Response:
        outcome = await self._preamble(request, MESSAGES_PATH)
        if isinstance(outcome, web.Response):
            return outcome
        body, behaviour = outcome
        text = behaviour.text if behaviour.text is not None else default_draft(body)
        number = next(self._ids)
        usage = {"input_tokens": estimate_input_tokens(body), "output_tokens": max(1, len(text) // 4)}
        self.usages.append(dict(usage))
        payload = {
            "id": f"msg_fake_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model", "claude-fake")),
            "content": [{"type": "text", "text": text}],
            "stop_reason": behaviour.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        headers = {"request-id": f"req_fake_{number:06d}", **behaviour.headers}
        if behaviour.body is not None:
            return web.Response(body=behaviour.body, content_type="application/json", headers=headers)
        return web.json_response(payload, headers=headers)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        outcome = await self._preamble(request, COUNT_TOKENS_PATH)
        if isinstance(outcome, web.Response):
            return outcome
        body, behaviour = outcome
        return web.json_response({"input_tokens": estimate_input_tokens(body)}, headers=dict(behaviour.headers))


def default_draft(body: Mapping[str, Any]) -> str:
    """The fake's deterministic reply: "Draft: " and the start of the last user message's text."""
    return "Draft: " + last_user_text(body)[:ECHO_CHARS]


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last user turn of a Messages request (string content or text blocks)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Roughly four characters a token, over the system prompt and every message."""
    system = body.get("system")
    chars = len(_content_text(system))
    messages = body.get("messages")
    if isinstance(messages, list):
        chars += sum(len(_content_text(message.get("content"))) for message in messages if isinstance(message, dict))
    return max(1, chars // 4)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(block.get("text", "")) for block in content if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


def _error(
    status: int,
    error_type: str,
    message: str,
    *,
    error_code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return web.json_response(
        {"type": "error", "error": error, "request_id": "req_fake_error"},
        status=status,
        headers=dict(headers or {}),
    )


def _header_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
