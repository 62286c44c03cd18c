"""The AI layer driven through the real anthropic SDK against the loopback fake Messages API."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anthropic
import pytest
from opentelemetry import trace

from slack_backend.ai import (
    OFFLINE_LABEL,
    SYSTEM_PROMPT,
    AIFailure,
    AIRejectedError,
    ClaudeDrafter,
    ContextMessage,
    DraftRequest,
    OfflineDrafter,
    RateLimitSnapshot,
    TransientAIError,
    build_messages,
    classify,
    make_drafter,
    select_context,
    user_message,
)
from slack_backend.ai.client import sdk_tracing
from slack_backend.ai.prompt import MAX_CONTEXT_MESSAGES
from slack_backend.queue.errors import RetryAfter, UnrecoverableError
from tests.fakes.anthropic_server import Behaviour, FakeAnthropic

API_KEY = "sk-ant-test-key"
MODEL = "claude-test-model"
MAX_TOKENS = 256


def _request(context_count: int = 3, trigger: str = "Can you send me the Q3 numbers by Friday?") -> DraftRequest:
    context = tuple(
        ContextMessage(user_id=f"U{i:03d}", text=f"context message number {i}", ts=f"1700000000.{i:06d}")
        for i in range(context_count)
    )
    return DraftRequest(trigger_text=trigger, context=context, requester_user_id="UREQUESTER")


def _user_content(fake: FakeAnthropic) -> str:
    content = fake.message_requests[-1].body["messages"][-1]["content"]
    assert isinstance(content, str)
    return content


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
async def drafter(fake_anthropic: FakeAnthropic) -> AsyncIterator[ClaudeDrafter]:
    claude = ClaudeDrafter(
        api_key=API_KEY, model=MODEL, base_url=fake_anthropic.base_url, max_tokens=MAX_TOKENS, timeout_s=5.0
    )
    yield claude
    await claude.aclose()


async def test_draft_returns_text_and_usage_and_sends_model_prompt_context(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """A normal draft returns the fake's text and usage; the request carried model, system prompt and context."""
    request = _request(context_count=3)
    draft = await drafter.draft(request)

    assert len(fake_anthropic.message_requests) == 1
    sent = fake_anthropic.message_requests[0]
    assert sent.api_key == API_KEY
    assert sent.body["model"] == MODEL
    assert sent.body["max_tokens"] == MAX_TOKENS
    assert sent.body["system"] == SYSTEM_PROMPT
    content = _user_content(fake_anthropic)
    assert "context message number 0" in content
    assert "context message number 2" in content
    assert request.trigger_text in content
    assert "<@UREQUESTER>" in content

    assert draft.text.startswith("Draft: ")
    assert draft.model == MODEL
    assert draft.offline is False
    # The counts the API's reply carried, passed through (not recomputed from the fake's formula).
    assert fake_anthropic.usages == [{"input_tokens": draft.input_tokens, "output_tokens": draft.output_tokens}]
    assert draft.input_tokens > 0


async def test_draft_context_is_bounded_to_the_newest_messages(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """A long thread is cut to the newest MAX_CONTEXT_MESSAGES messages before it is sent."""
    await drafter.draft(_request(context_count=MAX_CONTEXT_MESSAGES + 20))

    content = _user_content(fake_anthropic)
    assert content.count("context message number") == MAX_CONTEXT_MESSAGES
    oldest_kept = 20  # of messages 0..MAX+19, the newest MAX are 20..MAX+19
    assert f"context message number {oldest_kept}\n" in content
    assert f"context message number {MAX_CONTEXT_MESSAGES + 19}\n" in content
    assert f"context message number {oldest_kept - 1}\n" not in content


def test_select_context_caps_total_characters_keeping_newest() -> None:
    """The character cap drops the oldest messages whole and cuts only a single oversized newest message."""
    context = tuple(ContextMessage("U1", "x" * 100, f"{i}.0") for i in range(10))
    kept = select_context(context, max_messages=50, max_chars=350)
    assert [message.ts for message in kept] == ["7.0", "8.0", "9.0"]

    huge = (ContextMessage("U1", "old", "1.0"), ContextMessage("U2", "y" * 1000, "2.0"))
    kept = select_context(huge, max_messages=50, max_chars=100)
    assert len(kept) == 1
    assert kept[0].ts == "2.0"
    assert len(kept[0].text) == 100


def test_build_messages_is_one_user_turn_with_thread_and_trigger() -> None:
    """The prompt is a single user turn holding the thread block and the trigger message."""
    messages = build_messages(_request(context_count=2, trigger="ship it?"))
    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    content = messages[0]["content"]
    assert isinstance(content, str)
    assert content.index("<thread>") < content.index("<message>\nship it?\n</message>")


async def test_rate_limit_429_with_retry_after_holds_the_queue(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """A 429 with retry-after 2 becomes RetryAfter(2, hold_queue=True), chained to the SDK's RateLimitError."""
    fake_anthropic.script(Behaviour.rate_limited(retry_after_s=2))
    with pytest.raises(RetryAfter) as caught:
        await drafter.draft(_request())
    assert caught.value.delay_s == pytest.approx(2.0)
    assert caught.value.hold_queue is True
    assert "429" in caught.value.reason
    assert isinstance(caught.value.__cause__, anthropic.RateLimitError)
    # max_retries=0: the SDK did not retry behind the engine's back.
    assert len(fake_anthropic.message_requests) == 1


async def test_rate_limit_429_without_retry_after_falls_back_to_reset_then_default(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """A 429 without retry-after waits until the exhausted limit's reset, or 5 s when nothing says."""
    reset = _rfc3339(datetime.now(UTC) + timedelta(seconds=8))
    fake_anthropic.script(
        Behaviour.rate_limited(
            retry_after_s=None,
            headers={"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": reset},
        ),
        Behaviour.rate_limited(retry_after_s=None),
    )
    with pytest.raises(RetryAfter) as from_reset:
        await drafter.draft(_request())
    assert from_reset.value.delay_s == pytest.approx(8.0, abs=1.0)
    with pytest.raises(RetryAfter) as by_default:
        await drafter.draft(_request())
    assert by_default.value.delay_s == pytest.approx(5.0)


@pytest.mark.parametrize("error_code", ["enforced_spend_limit_reached", None])
async def test_spend_limit_429_is_unrecoverable(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic, error_code: str | None
) -> None:
    """A 429 saying the spend limit was reached (by error code or only in words) fails the job at once."""
    fake_anthropic.script(Behaviour.spend_limited(error_code=error_code))
    with pytest.raises(UnrecoverableError) as caught:
        await drafter.draft(_request())
    assert not isinstance(caught.value, RetryAfter)
    assert isinstance(caught.value, AIRejectedError)
    assert caught.value.failure is AIFailure.SPEND_LIMIT
    assert "spend limit" in str(caught.value)
    assert "spending limit" in user_message(caught.value)


@pytest.mark.parametrize(
    ("behaviour", "failure"),
    [
        (Behaviour.overloaded(), AIFailure.OVERLOADED),
        (Behaviour.server_error(500), AIFailure.SERVER_ERROR),
        (Behaviour.server_error(503), AIFailure.SERVER_ERROR),
    ],
    ids=["529", "500", "503"],
)
async def test_overload_and_server_errors_are_transient(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic, behaviour: Behaviour, failure: AIFailure
) -> None:
    """529 and 5xx become a transient error: neither RetryAfter nor UnrecoverableError, so the engine backs off."""
    fake_anthropic.script(behaviour)
    with pytest.raises(TransientAIError) as caught:
        await drafter.draft(_request())
    assert not isinstance(caught.value, RetryAfter | UnrecoverableError)
    assert caught.value.failure is failure
    assert caught.value.status_code == behaviour.status
    assert isinstance(caught.value.__cause__, anthropic.InternalServerError)
    assert len(fake_anthropic.message_requests) == 1


@pytest.mark.parametrize(
    ("behaviour", "phrase"),
    [
        (Behaviour.bad_request(), "rejected the request as invalid"),
        (Behaviour.unauthorized(), "rejected the API key"),
        (Behaviour.forbidden(), "not allowed to use this model"),
        (Behaviour.not_found(), "check ANTHROPIC_MODEL"),
    ],
    ids=["400", "401", "403", "404"],
)
async def test_client_errors_are_unrecoverable_with_a_plain_reason(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic, behaviour: Behaviour, phrase: str
) -> None:
    """400/401/403/404 fail the job at once with a reason an operator can act on."""
    fake_anthropic.script(behaviour)
    with pytest.raises(UnrecoverableError) as caught:
        await drafter.draft(_request())
    assert phrase in str(caught.value)
    assert isinstance(caught.value.__cause__, anthropic.APIStatusError)
    assert caught.value.__cause__.status_code == behaviour.status


async def test_wrong_api_key_is_rejected_by_the_fake_and_unrecoverable(fake_anthropic: FakeAnthropic) -> None:
    """The fake checks x-api-key like the real API, and a wrong key is an unrecoverable 401."""
    claude = ClaudeDrafter(api_key="sk-wrong", model=MODEL, base_url=fake_anthropic.base_url, timeout_s=5.0)
    try:
        with pytest.raises(AIRejectedError) as caught:
            await claude.draft(_request())
    finally:
        await claude.aclose()
    assert caught.value.failure is AIFailure.AUTHENTICATION
    assert "admin" in user_message(caught.value)


async def test_hang_beyond_the_client_timeout_is_transient(fake_anthropic: FakeAnthropic) -> None:
    """A request that outlasts the 0.5 s client timeout becomes a transient timeout, promptly."""
    claude = ClaudeDrafter(api_key=API_KEY, model=MODEL, base_url=fake_anthropic.base_url, timeout_s=0.5)
    fake_anthropic.script(Behaviour.hang(30.0))
    started = time.monotonic()
    try:
        with pytest.raises(TransientAIError) as caught:
            await claude.draft(_request())
    finally:
        await claude.aclose()
    # The 0.5 s client timeout ended it, not the 30 s hang: 3 s is room for a loaded 2-core machine.
    assert time.monotonic() - started < 3.0
    assert caught.value.failure is AIFailure.TIMEOUT
    assert isinstance(caught.value.__cause__, anthropic.APITimeoutError)
    assert not isinstance(caught.value, RetryAfter | UnrecoverableError)


async def test_connection_refused_is_transient() -> None:
    """Nobody listening on the port is a transient connection error, not a failure of the job."""
    async with FakeAnthropic() as fake:
        closed_url = fake.base_url
    claude = ClaudeDrafter(api_key=API_KEY, model=MODEL, base_url=closed_url, timeout_s=2.0)
    try:
        with pytest.raises(TransientAIError) as caught:
            await claude.draft(_request())
    finally:
        await claude.aclose()
    assert caught.value.failure is AIFailure.CONNECTION


async def test_exhausted_token_limit_headers_give_a_hold_of_the_reset_time(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """tokens-remaining 0 with a reset 3 s ahead on a success makes snapshot.hold_until_s about 3."""
    reset = _rfc3339(datetime.now(UTC) + timedelta(seconds=3))
    fake_anthropic.script(
        Behaviour.success(
            headers={
                "anthropic-ratelimit-tokens-limit": "80000",
                "anthropic-ratelimit-tokens-remaining": "0",
                "anthropic-ratelimit-tokens-reset": reset,
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
            }
        )
    )
    draft = await drafter.draft(_request())
    assert draft.rate_limits is not None
    assert draft.rate_limits.tokens.limit == 80000
    assert draft.rate_limits.requests.remaining == 49
    hold_s = draft.rate_limits.hold_until_s(datetime.now(UTC))
    assert hold_s == pytest.approx(3.0, abs=0.5)


async def test_plain_success_has_no_hold(drafter: ClaudeDrafter) -> None:
    """A success without rate-limit headers carries no snapshot, and a snapshot with room left holds nothing."""
    draft = await drafter.draft(_request())
    assert draft.rate_limits is None
    snapshot = RateLimitSnapshot.from_headers({"anthropic-ratelimit-requests-remaining": "5"})
    assert snapshot.hold_until_s(datetime.now(UTC)) is None


async def test_a_reply_gives_its_text_blocks_joined_and_its_stop_reason(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """Only the reply's text blocks make the draft, joined and stripped; a max_tokens stop marks it cut short; a
    refusal and a reply without text fail at once (an UnrecoverableError: each retry would be paid again)."""
    mixed = {
        "id": "msg_mixed",
        "type": "message",
        "role": "assistant",
        "model": "claude-other",
        "content": [
            {"type": "text", "text": "  Sure, "},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            {"type": "text", "text": "Friday works. "},
        ],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 321, "output_tokens": 45, "cache_read_input_tokens": 0},
    }
    fake_anthropic.script(
        Behaviour(body=json.dumps(mixed).encode()),
        Behaviour(stop_reason="refusal", text="I can't help with that."),
        Behaviour(text="   "),
    )
    draft = await drafter.draft(_request())
    assert (draft.text, draft.cut_short, draft.model) == ("Sure, Friday works.", True, "claude-other")
    assert (draft.input_tokens, draft.output_tokens) == (321, 45)

    with pytest.raises(AIRejectedError) as refused:
        await drafter.draft(_request())
    assert refused.value.failure is AIFailure.REFUSAL
    with pytest.raises(AIRejectedError) as empty:
        await drafter.draft(_request())
    assert empty.value.failure is AIFailure.EMPTY_REPLY
    assert isinstance(empty.value, UnrecoverableError)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"type": "message", "content": [{"type": "text", "text": "cut off',
        b'{"type": "message", "model": "m", "content": [{"type": "text", "text": "hi"}]}',
        b'{"type": "message", "model": "m", "content": "hi", "usage": {"input_tokens": 1, "output_tokens": 1}}',
        b'{"model": "m", "content": [], "usage": {"input_tokens": "1", "output_tokens": 1}}',
        b'{"model": "m", "content": [{"type": "text"}], "usage": {"input_tokens": 1, "output_tokens": 1}}',
        b"[]",
    ],
    ids=["not-json", "cut-off", "no-usage", "content-not-a-list", "count-not-a-number", "text-block-no-text", "list"],
)
async def test_a_200_that_is_not_a_messages_reply_is_transient_with_a_plain_reason(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic, body: bytes
) -> None:
    """A 200 whose body is not a Messages reply (a proxy's page, a cut-off answer) is a transient failure that
    says so, as the SDK's own response check is: another attempt may get the whole answer."""
    fake_anthropic.script(Behaviour(body=body))
    with pytest.raises(TransientAIError) as caught:
        await drafter.draft(_request())
    assert (caught.value.reason, caught.value.failure, caught.value.status_code) == (
        "the AI provider sent an answer we could not read",
        AIFailure.UNKNOWN,
        200,
    )


def test_retry_after_headers_parse_ms_seconds_and_http_date() -> None:
    """retry-after-ms wins over retry-after; an HTTP-date retry-after is turned into seconds from now."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    both = RateLimitSnapshot.from_headers({"Retry-After": "9", "retry-after-ms": "1500"}, now=now)
    assert both.retry_after_s == pytest.approx(1.5)
    dated = RateLimitSnapshot.from_headers({"retry-after": "Thu, 01 Jan 2026 12:00:04 GMT"}, now=now)
    assert dated.retry_after_s == pytest.approx(4.0)
    junk = RateLimitSnapshot.from_headers({"retry-after": "soon", "anthropic-ratelimit-tokens-reset": "?"})
    assert junk.retry_after_s is None
    assert junk.tokens.reset_at is None


async def test_estimate_tokens_is_chars_over_four_plus_max_tokens(
    drafter: ClaudeDrafter, fake_anthropic: FakeAnthropic
) -> None:
    """estimate_tokens counts characters / 4 plus the output cap, without any request."""
    request = _request()
    chars = len(SYSTEM_PROMPT) + sum(len(str(m["content"])) for m in build_messages(request))
    assert await drafter.estimate_tokens(request) == chars // 4 + MAX_TOKENS
    assert fake_anthropic.requests == []


async def test_offline_drafter_labels_its_placeholder() -> None:
    """Without an API key the factory gives the offline drafter, whose draft is labelled and marked offline."""
    offline = make_drafter(None, MODEL, None, MAX_TOKENS)
    assert isinstance(offline, OfflineDrafter)
    draft = await offline.draft(_request(trigger="Lunch at noon?"))
    await offline.aclose()
    assert draft.text.startswith("[offline draft - no ANTHROPIC_API_KEY set]")
    assert draft.text.startswith(OFFLINE_LABEL)
    assert "Lunch at noon?" in draft.text
    assert draft.offline is True
    assert draft.input_tokens > 0
    assert draft.output_tokens > 0
    assert isinstance(make_drafter("  ", MODEL, None, MAX_TOKENS), OfflineDrafter)


async def test_factory_gives_claude_drafter_with_a_key(fake_anthropic: FakeAnthropic) -> None:
    """With an API key the factory gives a working ClaudeDrafter pointed at base_url."""
    drafter = make_drafter(API_KEY, MODEL, fake_anthropic.base_url, MAX_TOKENS, timeout_s=5.0)
    try:
        assert isinstance(drafter, ClaudeDrafter)
        draft = await drafter.draft(_request(trigger="hello there"))
    finally:
        await drafter.aclose()
    assert draft.text == "Draft: " + _user_content(fake_anthropic)[:80]


def test_classify_passes_through_engine_signals_and_foreign_errors() -> None:
    """classify leaves the engine's own signals and non-Anthropic exceptions unchanged."""
    retry = RetryAfter(1.0)
    unrecoverable = UnrecoverableError("no")
    foreign = ValueError("boom")
    assert classify(retry) is retry
    assert classify(unrecoverable) is unrecoverable
    assert classify(foreign) is foreign
    assert user_message(foreign).startswith("Sorry")
    assert "try again in a few minutes" in user_message(retry)


async def test_fake_count_tokens_answers_the_real_sdk(fake_anthropic: FakeAnthropic) -> None:
    """The fake's count_tokens endpoint answers the SDK's messages.count_tokens."""
    async with anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake_anthropic.base_url, max_retries=0) as client:
        counted = await client.messages.count_tokens(
            model=MODEL, system="abcd" * 10, messages=[{"role": "user", "content": "efgh" * 10}]
        )
    assert counted.input_tokens == 20
    assert fake_anthropic.requests[-1].path == "/v1/messages/count_tokens"


class _TestTracerProvider(trace.TracerProvider):
    """A tracer provider an operator set (here: one that records nothing)."""

    def get_tracer(self, *args: object, **kwargs: object) -> trace.Tracer:
        return trace.NoOpTracer()


@pytest.fixture
def no_sdk_tracing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("ANTHROPIC_OPEN_TELEMETRY")]:
        monkeypatch.delenv(name)


def test_sdk_tracing_is_off_unless_an_operator_set_tracing_up(
    no_sdk_tracing_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no tracer provider set (OpenTelemetry's proxy) and no ANTHROPIC_OPEN_TELEMETRY* variable, the SDK's
    spans are off: it would build each call's span attributes for nothing. A provider set, or any of the SDK's own
    variables, leaves the SDK its default (None), which reads those variables."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert sdk_tracing() is False
    assert sdk_tracing(_TestTracerProvider()) is None
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", "content")
    assert sdk_tracing() is None


async def test_a_drafter_without_tracing_set_up_has_the_sdks_spans_off_and_still_drafts(
    no_sdk_tracing_env: None, fake_anthropic: FakeAnthropic
) -> None:
    """The drafter hands the SDK the option, and the SDK accepts it: its client's traces are off, and drafts go
    through the fake Messages API as before."""
    drafter = ClaudeDrafter(api_key=API_KEY, model=MODEL, base_url=fake_anthropic.base_url)
    try:
        assert drafter._client._open_telemetry["traces"]["enabled"] is False
        draft = await drafter.draft(_request())
    finally:
        await drafter.aclose()
    assert draft.text
    assert len(fake_anthropic.message_requests) == 1
