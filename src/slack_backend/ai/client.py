"""ClaudeDrafter: one Messages API call per draft, with usage and rate-limit headers, errors classified."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anthropic

from slack_backend.ai.errors import AIFailure, AIRejectedError, classify
from slack_backend.ai.prompt import SYSTEM_PROMPT, build_messages, estimate_input_tokens
from slack_backend.ai.ratelimit_headers import RateLimitSnapshot
from slack_backend.ai.types import Draft, DraftRequest

DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT_S = 60.0

BeforeCall = Callable[[], Awaitable[object]]
"""Awaited right before each model call goes out (a shared rate limit's slot); it may wait as long as it must."""


class ClaudeDrafter:
    """Drafts replies with Claude through the official async SDK.

    The SDK's own retries are off (`max_retries=0`): the job engine owns retries, backoff and the shared
    rate limit, and SDK retries inside a job would hide 429s from it and multiply the load.
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
                built it: the later a rate-limit slot is taken, the closer its stamp is to when the API sees it.
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        http_client: anthropic.DefaultAsyncHttpxClient | None = None
        if before_call is not None:
            http_client = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [_slot_at_send(before_call)]})
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0, http_client=http_client
        )

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
            message = await raw.parse()
        except anthropic.AnthropicError as exc:
            raise classify(exc) from exc
        text = "".join(block.text for block in message.content if block.type == "text").strip()
        if message.stop_reason == "refusal":
            # The model declined for safety reasons; asking again costs tokens and gets the same answer.
            raise AIRejectedError(
                "the model declined to draft a reply (stop_reason=refusal)", failure=AIFailure.REFUSAL
            )
        if not text:
            raise AIRejectedError(
                f"the AI provider returned no text (stop_reason={message.stop_reason})", failure=AIFailure.EMPTY_REPLY
            )
        snapshot = RateLimitSnapshot.from_headers(raw.headers)
        return Draft(
            text=text,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            model=message.model,
            offline=False,
            rate_limits=None if snapshot.is_empty else snapshot,
            cut_short=message.stop_reason == "max_tokens",
        )

    async def estimate_tokens(self, request: DraftRequest) -> int:
        """Estimate the tokens one draft may use: input by character count plus the full output cap."""
        return estimate_input_tokens(request) + self.max_tokens

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()


def _slot_at_send(before_call: BeforeCall) -> Callable[[Any], Awaitable[None]]:
    """An httpx request hook that awaits `before_call` once the connection is ready and the headers are next.

    The SDK's request building and a new connection's set-up took 20-90 ms on a loaded machine (measured): a
    slot taken before them reached the API that much later than its stamp, and a window's calls bunched. The
    wait therefore runs in httpcore's trace at `send_request_headers`, the moment before the first byte goes.
    """

    async def on_request(request: Any) -> None:  # the SDK's own httpx build: its Request type is not ours
        if not request.url.path.endswith("/v1/messages"):
            return

        async def trace(event: str, info: dict[str, object]) -> None:
            if event.endswith("send_request_headers.started"):
                await before_call()

        request.extensions["trace"] = trace

    return on_request
