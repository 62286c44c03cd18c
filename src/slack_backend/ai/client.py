"""ClaudeDrafter: one Messages API call per draft, with usage and rate-limit headers, errors classified."""

from __future__ import annotations

import os
import ssl
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Literal

import aiohttp
import anthropic
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from anthropic._vendor.httpx_aiohttp.transport import AiohttpTransport
from opentelemetry import trace

from slack_backend.ai.errors import AIFailure, AIRejectedError, classify
from slack_backend.ai.prompt import SYSTEM_PROMPT, build_messages, estimate_input_tokens
from slack_backend.ai.ratelimit_headers import RateLimitSnapshot
from slack_backend.ai.reply import read_reply
from slack_backend.ai.types import Draft, DraftRequest

DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT_S = 60.0

BeforeCall = Callable[[], Awaitable[object]]
"""Awaited right before each model call goes out (a shared rate limit's slot); it may wait as long as it must."""


class ClaudeDrafter:
    """Drafts replies with Claude through the official async SDK, on aiohttp.

    The SDK's requests go through its vendored aiohttp transport (less CPU a call than its default httpx stack)
    on one `aiohttp.ClientSession`, opened at the first call and closed by `aclose()`. The SDK's own retries
    are off (`max_retries=0`): the job engine owns retries, backoff and the shared rate limit, and SDK retries
    inside a job would hide 429s from it and multiply the load.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        before_call: BeforeCall | None = None,
    ) -> None:
        """Create the SDK client; no request is made until `draft()`.

        Args:
            api_key: the Anthropic API key.
            model: the model name sent with every request.
            base_url: another endpoint (a proxy, or a test's fake server); None for the SDK default.
            max_tokens: the cap on each draft's output tokens.
            timeout_s: how long one request may take before it counts as a (transient) timeout.
            before_call: awaited as the HTTP request of each Messages call is about to be sent, after the SDK
                built it and its connection is ready: the later a rate-limit slot is taken, the closer its stamp
                is to when the API sees it. Its wait counts against no timeout.
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        transport = _SlotTransport(before_call)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(transport=transport),
            open_telemetry=sdk_tracing(),
        )
        # Given a transport, the SDK's client mounts no proxies from the environment; the proxy for the one URL
        # this client calls is read here, once, as httpx read it. (aiohttp's `trust_env` would read the proxy
        # variables and ~/.netrc again at every request: 0.3-0.4 ms of CPU a call, measured.)
        transport.proxy_url = _env_proxy_url(self._client.base_url.scheme, self._client.base_url.host)

    async def draft(self, request: DraftRequest) -> Draft:
        """Ask Claude for one draft.

        Raises:
            RetryAfter: on a rate-limit 429 (with `hold_queue=True`).
            AIRejectedError: an `UnrecoverableError`, when retrying cannot help (bad key, spend limit...), and for a
                refusal (`stop_reason == "refusal"`) or a reply with no text: each retry would be paid again.
            TransientAIError: on overload, server errors, timeouts and connection failures.
        """
        try:
            raw = await self._client.messages.with_raw_response.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=SYSTEM_PROMPT,
                messages=build_messages(request),
            )
            body = await raw.read()
        except anthropic.AnthropicError as exc:
            raise classify(exc) from exc
        reply = read_reply(body, status_code=raw.status_code)
        text = reply.text.strip()
        if reply.stop_reason == "refusal":
            # The model declined for safety reasons; asking again costs tokens and gets the same answer.
            raise AIRejectedError(
                "the model declined to draft a reply (stop_reason=refusal)", failure=AIFailure.REFUSAL
            )
        if not text:
            raise AIRejectedError(
                f"the AI provider returned no text (stop_reason={reply.stop_reason})", failure=AIFailure.EMPTY_REPLY
            )
        snapshot = RateLimitSnapshot.from_headers(raw.headers)
        return Draft(
            text=text,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            model=reply.model,
            offline=False,
            rate_limits=None if snapshot.is_empty else snapshot,
            cut_short=reply.stop_reason == "max_tokens",
        )

    async def estimate_tokens(self, request: DraftRequest) -> int:
        """Estimate the tokens one draft may use: input by character count plus the full output cap."""
        return estimate_input_tokens(request) + self.max_tokens

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections and its aiohttp session."""
        await self._client.close()


class _SlotTransport(AiohttpTransport):
    """The SDK's aiohttp transport, on a session whose connector takes the rate-limit slot (see _SlotConnector)."""

    def __init__(self, before_call: BeforeCall | None) -> None:
        super().__init__(limits=anthropic.DEFAULT_CONNECTION_LIMITS)
        self._before_call = before_call
        self.proxy_url: str | None = None

    def get_client(self) -> aiohttp.ClientSession:
        """Open the session: called by the transport at the first request, inside the running loop aiohttp needs."""
        connector = _SlotConnector(
            self._before_call,
            ssl_context=self.ssl_context,
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
        )
        return aiohttp.ClientSession(connector=connector, proxy=self.proxy_url)


def sdk_tracing(provider: trace.TracerProvider | None = None) -> Literal[False] | None:
    """The SDK's `open_telemetry` option: None (the SDK's own default) when tracing is set up, else False (off).

    The SDK builds each call's span attributes (server, model, headers, request options) before it asks its tracer
    whether the span records: about 200,000 instructions a call, 5% of one (measured, docs/performance.md, round
    12), spent for nothing when no tracer provider is set, and this service sets none. Tracing counts as set up
    when a tracer provider is set before the drafter is made (`provider`, by default OpenTelemetry's global one,
    as `opentelemetry-instrument` sets it before the service starts), or any ANTHROPIC_OPEN_TELEMETRY* variable is
    set (the SDK then reads them, as it always did).
    """
    if any(name.startswith("ANTHROPIC_OPEN_TELEMETRY") for name in os.environ):
        return None
    current = trace.get_tracer_provider() if provider is None else provider
    return False if isinstance(current, trace.ProxyTracerProvider) else None


def _env_proxy_url(scheme: str, host: str) -> str | None:
    """The proxy `<scheme>_proxy` or `all_proxy` names for `host`, unless `no_proxy` exempts it."""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(scheme) or proxies.get("all")


class _SlotConnector(aiohttp.TCPConnector):
    """A connector that awaits `before_call` for each Messages request once its connection is ready.

    The SDK's request building and a new connection's set-up took 20-90 ms on a loaded machine (measured): a
    slot taken before them reached the API that much later than its stamp, and a window's calls bunched. aiohttp
    writes the request right after `connect()` returns (nothing awaited in between), so the wait runs at the end
    of `connect()`: after the pool handed out a connection or a new one was set up, before the first byte goes,
    and outside the connect timeout. aiohttp's trace hooks at the same points (`on_connection_reuseconn`,
    `on_connection_create_end`) run inside that timeout for a new connection, and a hook that raises leaves its
    connection open, neither pooled nor closed; here a wait that fails or is cancelled puts the untouched
    connection back in the pool. Its error reaches the SDK as any transport error does (`APIConnectionError`).
    """

    def __init__(
        self,
        before_call: BeforeCall | None,
        *,
        ssl_context: ssl.SSLContext,
        limit: int,
        keepalive_timeout: float | None,
    ) -> None:
        super().__init__(ssl=ssl_context, limit=limit, keepalive_timeout=keepalive_timeout)
        self._before_call = before_call

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        """Get a connection (aiohttp's own way), then take the slot if the request is a Messages call."""
        conn = await super().connect(req, traces, timeout)
        # count_tokens (/v1/messages/count_tokens) is free and unlimited: only Messages calls take a slot.
        if self._before_call is None or not req.url.path.endswith("/v1/messages"):
            return conn
        try:
            await self._before_call()
        except BaseException:
            conn.release()
            raise
        return conn
