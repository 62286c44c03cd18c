"""The slack/ layer driven through the real slack_sdk AsyncWebClient and aiohttp against the loopback fake Slack."""

from __future__ import annotations

import html
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import FileInstallationStore, Installation
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.jobs.types import AIResponseJobData, TriggerKind
from slack_backend.queue.errors import RetryAfter, UnrecoverableError
from slack_backend.slack import (
    DRAFT_HEADER,
    OFFLINE_DRAFT_LABEL,
    AppNotInstalledError,
    InMemoryDeliveryLedger,
    InstallationStoreTokenSource,
    ResponseUrlError,
    SlackDelivery,
    SlackRejectedError,
    StaticTokenSource,
    classify_slack_error,
    draft_blocks,
    escape_mrkdwn,
    failure_text,
    read_thread,
    user_facing_reason,
)
from slack_backend.slack.delivery import PROGRESS_REACTION
from slack_backend.slack.messages import MESSAGE_MAX_BLOCKS, MESSAGE_MAX_TEXT_CHARS, SECTION_MAX_CHARS
from tests.fakes.slack_server import RESPONSE_URL_MAX_USES, RESPONSE_URL_METHOD, FakeSlack
from tests.support.redis_server import free_port

BOT_TOKEN = "xoxb-slack-layer-test-token"
TEAM = "T0FAKE"
CHANNEL = "C0CHANNEL"
DM = "D0DIRECT"
USER = "U0ASKER"
THREAD_TS = "1700000000.000100"
MESSAGE_TS = "1700000000.000200"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM) as slack:
        yield slack


@pytest.fixture
def ledger() -> InMemoryDeliveryLedger:
    return InMemoryDeliveryLedger()


@pytest.fixture
def delivery(fake: FakeSlack, ledger: InMemoryDeliveryLedger) -> SlackDelivery:
    # No session is given to the client: slack_sdk opens and closes one per call, so nothing is left unclosed.
    # The fake is loopback, as SLACK_API_URL is in tests: its response_urls may be posted to.
    return SlackDelivery(
        lambda token: AsyncWebClient(token=token, base_url=fake.base_url), ledger, allow_loopback_response_url=True
    )


def _data(
    *, response_url: str | None = None, thread_ts: str | None = THREAD_TS, trigger: TriggerKind = TriggerKind.MENTION
) -> AIResponseJobData:
    return AIResponseJobData(
        workspace_id=TEAM,
        user_id=USER,
        channel_id=CHANNEL,
        trigger=trigger,
        trigger_text="Can you send me the Q3 numbers?",
        message_ts=MESSAGE_TS,
        thread_ts=thread_ts,
        response_url=response_url,
    )


def _section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [block["text"]["text"] for block in blocks if block["type"] == "section"]


def _draft_sections(blocks: list[dict[str, Any]]) -> list[str]:
    # The draft's own sections: everything but the header context and the offline label.
    return [text for text in _section_texts(blocks) if OFFLINE_DRAFT_LABEL not in text]


def _block_chars(blocks: list[dict[str, Any]]) -> int:
    total = 0
    for block in blocks:
        if block["type"] == "section":
            total += len(block["text"]["text"])
        else:
            total += sum(len(element["text"]) for element in block["elements"])
    return total


def _long_draft(target_chars: int) -> str:
    """A draft with paragraphs, lines, plain words, escapable characters and one unbroken 5,000-char run."""
    paragraphs: list[str] = []
    number = 0
    while sum(len(p) + 2 for p in paragraphs) < target_chars:
        lines = []
        for _ in range(6):
            words = " ".join(f"w{number + i}" for i in range(12))
            lines.append(f"{words} <tag> & more")
            number += 12
        paragraphs.append("\n".join(lines))
        if len(paragraphs) == 3:
            paragraphs.append("x" * 5_000)
    return "\n\n".join(paragraphs)


def _normalized(text: str) -> str:
    # Split points drop whitespace, and a run longer than a section is cut mid-word: compare without whitespace.
    return "".join(text.split())


async def test_draft_via_response_url_replaces_original_with_the_draft(
    fake: FakeSlack, delivery: SlackDelivery, ledger: InMemoryDeliveryLedger
) -> None:
    """A command's draft goes to its response_url, ephemeral, replacing the "Drafting" ack, with header and text."""
    data = _data(response_url=fake.response_url("r1"), trigger=TriggerKind.SLASH_COMMAND)
    receipt = await delivery.deliver("job-1", data, BOT_TOKEN, "Sure, I'll send them by Friday.", offline=False)
    assert (receipt.via, receipt.parts, receipt.skipped) == ("response_url", 1, False)
    [post] = fake.response_posts["r1"]
    assert post["response_type"] == "ephemeral"
    assert post["replace_original"] is True
    assert _section_texts(post["blocks"]) == ["Sure, I'll send them by Friday."]
    assert DRAFT_HEADER in post["blocks"][0]["elements"][0]["text"]
    assert DRAFT_HEADER in post["text"]
    assert fake.calls_to("chat.postEphemeral") == []
    assert await ledger.delivered("job-1")


async def test_without_response_url_posts_ephemeral_to_the_channel_user_and_thread(
    fake: FakeSlack, delivery: SlackDelivery
) -> None:
    """Without a response_url chat.postEphemeral targets the channel, the asking user and the thread, with the token."""
    receipt = await delivery.deliver("job-2", _data(), BOT_TOKEN, "Here you go.", offline=True)
    assert (receipt.via, receipt.parts) == ("ephemeral", 1)
    [call] = fake.calls_to("chat.postEphemeral")
    assert call.token == BOT_TOKEN  # read by the fake from the Authorization: Bearer header slack_sdk sends
    assert (call.params["channel"], call.params["user"], call.params["thread_ts"]) == (CHANNEL, USER, THREAD_TS)
    assert _draft_sections(call.params["blocks"]) == ["Here you go."]
    assert any(OFFLINE_DRAFT_LABEL in text for text in _section_texts(call.params["blocks"]))
    assert OFFLINE_DRAFT_LABEL in call.params["text"]


async def test_thread_trigger_without_thread_ts_posts_under_the_message(
    fake: FakeSlack, delivery: SlackDelivery
) -> None:
    """A thread trigger with no thread_ts uses the message ts as the thread; a top-level mention posts unthreaded."""
    await delivery.deliver("job-t", _data(thread_ts=None, trigger=TriggerKind.THREAD), BOT_TOKEN, "a", offline=False)
    await delivery.deliver("job-m", _data(thread_ts=None), BOT_TOKEN, "b", offline=False)
    threaded, top_level = fake.calls_to("chat.postEphemeral")
    assert threaded.params["thread_ts"] == MESSAGE_TS
    assert "thread_ts" not in top_level.params


def test_long_draft_splits_into_messages_within_limits_without_losing_text() -> None:
    """A 20,000-char draft splits into several messages within Slack's limits; rejoined it equals the original."""
    draft = _long_draft(20_000)
    assert len(draft) >= 20_000
    messages = draft_blocks(draft, offline=True)
    assert len(messages) >= 2
    rejoined: list[str] = []
    for blocks in messages:
        assert len(blocks) <= MESSAGE_MAX_BLOCKS
        assert _block_chars(blocks) <= MESSAGE_MAX_TEXT_CHARS
        assert all(0 < len(text) <= SECTION_MAX_CHARS for text in _section_texts(blocks))
        rejoined.extend(html.unescape(text) for text in _draft_sections(blocks))
    assert _normalized(" ".join(rejoined)) == _normalized(draft)


def test_many_short_paragraphs_stay_within_the_block_limit() -> None:
    """Thousands of one-word paragraphs are packed into few sections, never more than 50 blocks a message."""
    draft = "\n\n".join(f"p{i}" for i in range(3_000))
    messages = draft_blocks(draft, offline=False)
    assert all(len(blocks) <= MESSAGE_MAX_BLOCKS for blocks in messages)
    rejoined = " ".join(text for blocks in messages for text in _draft_sections(blocks))
    assert _normalized(rejoined) == _normalized(draft)


async def test_long_draft_is_delivered_in_parts_over_the_response_url(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """Each part of a long draft is posted: a command's first replaces its ack; a shortcut's replace nothing."""
    draft = _long_draft(20_000)
    command = _data(response_url=fake.response_url("r3"), trigger=TriggerKind.SLASH_COMMAND)
    receipt = await delivery.deliver("job-3", command, BOT_TOKEN, draft, offline=False)
    posts = fake.response_posts["r3"]
    assert receipt.parts == len(posts) >= 2
    assert [post["replace_original"] for post in posts] == [True] + [False] * (len(posts) - 1)
    assert all(post["response_type"] == "ephemeral" for post in posts)
    rejoined = " ".join(html.unescape(text) for post in posts for text in _draft_sections(post["blocks"]))
    assert _normalized(rejoined) == _normalized(draft)

    url = fake.response_url("r3s", replaceable=False)
    shortcut = _data(response_url=url, trigger=TriggerKind.MESSAGE_ACTION)
    await delivery.deliver("job-3s", shortcut, BOT_TOKEN, draft, offline=False)
    assert [post["replace_original"] for post in fake.response_posts["r3s"]] == [False] * len(posts)


async def test_more_parts_than_response_url_uses_go_on_by_post_ephemeral(
    fake: FakeSlack, delivery: SlackDelivery
) -> None:
    """A draft needing more parts than the URL's 5 uses posts the rest by chat.postEphemeral, never over-using it."""
    draft = _long_draft(70_000)
    receipt = await delivery.deliver(
        "job-4", _data(response_url=fake.response_url("r4")), BOT_TOKEN, draft, offline=False
    )
    assert receipt.parts > RESPONSE_URL_MAX_USES
    assert len(fake.calls_to(RESPONSE_URL_METHOD)) == RESPONSE_URL_MAX_USES
    assert len(fake.calls_to("chat.postEphemeral")) == receipt.parts - RESPONSE_URL_MAX_USES
    assert receipt.via == "response_url"


async def test_second_deliver_of_a_delivered_job_posts_nothing(
    fake: FakeSlack, delivery: SlackDelivery, ledger: InMemoryDeliveryLedger
) -> None:
    """A rerun of a job whose draft the ledger marks delivered posts nothing and says it skipped."""
    data = _data(response_url=fake.response_url("r5"))
    await delivery.deliver("job-5", data, BOT_TOKEN, "first run", offline=False)
    calls_before = len(fake.calls)
    again = await delivery.deliver("job-5", data, BOT_TOKEN, "second run, new text", offline=False)
    assert again.skipped is True
    assert again.parts == 0
    assert len(fake.calls) == calls_before

    await ledger.mark_delivered("job-6")
    fresh = SlackDelivery(
        lambda token: AsyncWebClient(token=token, base_url=fake.base_url), ledger, allow_loopback_response_url=True
    )
    assert (await fresh.deliver("job-6", _data(), BOT_TOKEN, "x", offline=False)).skipped is True
    assert len(fake.calls) == calls_before


async def test_slack_429_is_honoured_in_place_then_delivered(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """A 429 with Retry-After 1 on chat.postEphemeral is waited out (~1 s) and the draft then delivered."""
    fake.rate_limit_next("chat.postEphemeral", retry_after_s=1)
    started = time.monotonic()
    receipt = await delivery.deliver("job-7", _data(), BOT_TOKEN, "after the wait", offline=False)
    waited_s = time.monotonic() - started
    assert receipt.parts == 1
    # The 1 s Retry-After was waited out; under 3 s: no second wait or backoff on top (room for a loaded machine).
    assert 0.95 <= waited_s < 3.0
    assert len(fake.calls_to("chat.postEphemeral")) == 2


async def test_slack_429_beyond_the_wait_budget_becomes_retry_after(
    fake: FakeSlack, ledger: InMemoryDeliveryLedger
) -> None:
    """When Retry-After exceeds the in-place wait budget, deliver raises RetryAfter (queue not held), unmarked."""
    delivery = SlackDelivery(
        lambda token: AsyncWebClient(token=token, base_url=fake.base_url), ledger, max_rate_limit_wait_s=0.5
    )
    fake.rate_limit_next("chat.postEphemeral", retry_after_s=2)
    with pytest.raises(RetryAfter) as caught:
        await delivery.deliver("job-8", _data(), BOT_TOKEN, "later", offline=False)
    assert caught.value.delay_s == 2
    assert caught.value.hold_queue is False
    assert not await ledger.delivered("job-8")


async def test_response_url_429_is_honoured_and_5xx_is_transient(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """A 429 from the response_url is waited out; a 5xx from it is raised as a transient ResponseUrlError."""
    fake.rate_limit_next(RESPONSE_URL_METHOD, retry_after_s=1)
    started = time.monotonic()
    await delivery.deliver("job-9", _data(response_url=fake.response_url("r9")), BOT_TOKEN, "ok", offline=False)
    assert time.monotonic() - started >= 0.95
    assert len(fake.response_posts["r9"]) == 1

    fake.server_error_next(RESPONSE_URL_METHOD, status=503)
    with pytest.raises(ResponseUrlError) as caught:
        await delivery.deliver("job-10", _data(response_url=fake.response_url("r10")), BOT_TOKEN, "x", offline=False)
    assert caught.value.status_code == 503
    assert not isinstance(caught.value, UnrecoverableError)


async def test_channel_not_found_is_unrecoverable(
    fake: FakeSlack, delivery: SlackDelivery, ledger: InMemoryDeliveryLedger
) -> None:
    """channel_not_found from chat.postEphemeral fails the job at once, with a plain reason for the user."""
    fake.fail_next("chat.postEphemeral", error="channel_not_found")
    with pytest.raises(UnrecoverableError) as caught:
        await delivery.deliver("job-11", _data(), BOT_TOKEN, "nowhere to go", offline=False)
    assert isinstance(caught.value, SlackRejectedError)
    assert caught.value.error == "channel_not_found"
    assert isinstance(caught.value.__cause__, SlackApiError)
    assert "invite" in user_facing_reason(caught.value).lower()
    assert not await ledger.delivered("job-11")


async def test_errors_are_classified(fake: FakeSlack) -> None:
    """Permanent Slack codes become UnrecoverableError, 429 a RetryAfter, and 5xx / connection errors stay transient."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
    permanent = [
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "channel_not_found",
        "not_in_channel",
        "user_not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "restricted_action",
        "missing_scope",
    ]
    for code in permanent:
        fake.fail_next("chat.postMessage", error=code)
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel=CHANNEL, text="hi")
        classified = classify_slack_error(refused.value)
        assert isinstance(classified, UnrecoverableError), code
        assert "_" in str(classified)  # names the code for the operator
        assert "Sorry" not in user_facing_reason(classified)

    fake.rate_limit_next("chat.postMessage", retry_after_s=7)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel=CHANNEL, text="hi")
    retry = classify_slack_error(limited.value)
    assert isinstance(retry, RetryAfter)
    assert (retry.delay_s, retry.hold_queue) == (7, False)

    fake.server_error_next("chat.postMessage", status=502)
    with pytest.raises(SlackApiError) as broken:
        await client.chat_postMessage(channel=CHANNEL, text="hi")
    assert classify_slack_error(broken.value) is broken.value

    for transient in (aiohttp.ClientConnectionError("down"), TimeoutError(), OSError("reset")):
        assert classify_slack_error(transient) is transient
        assert "try again" in user_facing_reason(transient)


async def test_read_thread_returns_bounded_ordered_context(fake: FakeSlack) -> None:
    """read_thread pages with the cursor and keeps the newest messages within the bounds, oldest first."""
    messages: list[dict[str, Any]] = [
        {"user": f"U{i:03d}", "text": f"message {i}", "ts": f"1700000000.{i:06d}"} for i in range(1, 11)
    ]
    messages[7] = {"bot_id": "B0BOT", "subtype": "bot_message", "text": "bot says hi", "ts": "1700000000.000008"}
    messages.append({"user": "U999", "text": "", "ts": "1700000000.000011"})
    # A DM (bots may read its threads) of a Marketplace app (Tier 3: several pages a minute).
    fake.marketplace_app = True
    fake.add_thread(DM, "1700000000.000001", messages)
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)

    context = await read_thread(
        client, DM, "1700000000.000001", max_messages=4, exclude_ts="1700000000.000010", page_size=3
    )
    assert [m.ts for m in context] == [f"1700000000.{i:06d}" for i in (6, 7, 8, 9)]
    assert [m.user_id for m in context] == ["U006", "U007", "B0BOT", "U009"]
    calls = fake.calls_to("conversations.replies")
    assert len(calls) == 4
    assert [call.params.get("cursor") for call in calls] == [None, "3", "6", "9"]

    by_chars = await read_thread(client, DM, "1700000000.000001", max_chars=20)
    assert [m.text for m in by_chars] == ["message 9", "message 10"]
    assert sum(len(m.text) for m in by_chars) <= 20

    tiny = await read_thread(client, DM, "1700000000.000001", max_chars=8)
    assert len(tiny) == 1
    assert len(tiny[0].text) <= 8


async def test_read_thread_errors_are_classified(fake: FakeSlack) -> None:
    """A refused conversations.replies raises the classified error, chained to Slack's."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
    fake.add_thread("C0OTHER", "1.0", [{"user": "U1", "text": "x", "ts": "1.0"}])
    with pytest.raises(UnrecoverableError) as caught:
        await read_thread(client, CHANNEL, THREAD_TS)
    assert isinstance(caught.value.__cause__, SlackApiError)
    fake.rate_limit_next("conversations.replies", retry_after_s=3)
    with pytest.raises(RetryAfter):
        await read_thread(client, "C0OTHER", "1.0")


async def test_progress_is_a_reaction_once_per_run_and_never_a_note_left_behind(
    fake: FakeSlack, delivery: SlackDelivery
) -> None:
    """A mention's progress is one hourglass reaction per run, removed on delivery; commands, shortcuts get none."""
    data = _data(response_url=None)
    await delivery.progress(data, BOT_TOKEN, "drafting")
    await delivery.progress(data, BOT_TOKEN, "delivering")
    assert fake.reactions == {(CHANNEL, MESSAGE_TS, PROGRESS_REACTION)}
    assert len(fake.calls_to("reactions.add")) == 1
    rerun = _data(response_url=None)
    await delivery.progress(rerun, BOT_TOKEN, "drafting")  # already_reacted: quietly fine
    await delivery.deliver("job-p", rerun, BOT_TOKEN, "draft", offline=False)
    assert fake.reactions == set()

    command = _data(response_url=fake.response_url("p1"), trigger=TriggerKind.SLASH_COMMAND)
    shortcut = _data(response_url=fake.response_url("p2", replaceable=False), trigger=TriggerKind.MESSAGE_ACTION)
    watched = _data(response_url=None, trigger=TriggerKind.REPLY)  # someone else's message: no reaction on it
    for quiet in (command, shortcut, watched):
        await delivery.progress(quiet, BOT_TOKEN, "drafting")
    assert fake.response_posts == {}
    assert len(fake.calls_to("reactions.add")) == 2
    assert [c for c in fake.calls_to("chat.postEphemeral") if not c.params.get("blocks")] == []


async def test_response_url_off_slack_hosts_is_never_fetched(fake: FakeSlack, ledger: InMemoryDeliveryLedger) -> None:
    """Delivery never POSTs to a response_url off Slack's hook hosts (here loopback, not allowed): it goes ephemeral."""
    strict = SlackDelivery(lambda token: AsyncWebClient(token=token, base_url=fake.base_url), ledger)
    data = _data(response_url=fake.response_url("x1"), trigger=TriggerKind.SLASH_COMMAND)
    receipt = await strict.deliver("job-x", data, BOT_TOKEN, "draft", offline=False)
    assert await strict.tell_failure(data, BOT_TOKEN, "x")
    assert receipt.via == "ephemeral"
    assert fake.calls_to(RESPONSE_URL_METHOD) == []
    assert len(fake.calls_to("chat.postEphemeral")) == 2


async def test_progress_failures_never_fail_the_job(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """A progress post that Slack refuses or rate limits is logged and ignored."""
    fake.server_error_next(RESPONSE_URL_METHOD)
    await delivery.progress(_data(response_url=fake.response_url("p2")), BOT_TOKEN, "drafting")
    fake.rate_limit_next("chat.postEphemeral", retry_after_s=30)
    started = time.monotonic()
    await delivery.progress(_data(), BOT_TOKEN, "drafting")
    assert time.monotonic() - started < 5


async def test_used_up_response_url_falls_back_to_post_ephemeral(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """A response_url Slack answers 404 used_url for (used up elsewhere) falls back to chat.postEphemeral."""
    url = fake.response_url("used")
    async with httpx.AsyncClient() as http:
        for _ in range(RESPONSE_URL_MAX_USES):
            await http.post(url, json={"text": "an earlier use"})
    receipt = await delivery.deliver("job-12", _data(response_url=url), BOT_TOKEN, "the draft", offline=False)
    assert receipt.via == "ephemeral"
    assert len(fake.calls_to(RESPONSE_URL_METHOD)) == RESPONSE_URL_MAX_USES + 1
    [call] = fake.calls_to("chat.postEphemeral")
    assert _draft_sections(call.params["blocks"]) == ["the draft"]

    # Known to be used up now: the next message goes straight to chat.postEphemeral.
    await delivery.tell_failure(_data(response_url=url), BOT_TOKEN, "x")
    assert len(fake.calls_to(RESPONSE_URL_METHOD)) == RESPONSE_URL_MAX_USES + 1


async def test_response_url_posts_on_a_shared_session_leave_it_open(
    fake: FakeSlack, ledger: InMemoryDeliveryLedger
) -> None:
    """Response_url posts through the caller's aiohttp session reuse it and leave it open; the caller closes it."""
    async with aiohttp.ClientSession() as session:
        shared = SlackDelivery(
            lambda token: AsyncWebClient(token=token, base_url=fake.base_url),
            ledger,
            session=session,
            allow_loopback_response_url=True,
        )
        await shared.respond(fake.response_url("s1"), {"text": "a note"})
        assert not session.closed
        command = _data(response_url=fake.response_url("s2"), trigger=TriggerKind.SLASH_COMMAND)
        receipt = await shared.deliver("job-s", command, BOT_TOKEN, "the draft", offline=False)
        assert receipt.via == "response_url"
        assert await shared.tell_failure(command, BOT_TOKEN, "x")
        assert not session.closed
    assert [post["text"] for post in fake.response_posts["s1"]] == ["a note"]
    assert len(fake.response_posts["s2"]) == 2
    assert fake.calls_to("chat.postEphemeral") == []


async def test_response_url_network_failure_is_left_for_the_engine_to_retry(
    fake: FakeSlack, ledger: InMemoryDeliveryLedger
) -> None:
    """A response_url on a closed port raises a connection error (neither permanent nor a 429), nothing is marked
    delivered, and the job's rerun delivers; the shared session stays usable."""
    dead_url = f"http://127.0.0.1:{free_port()}/response/dead"
    async with aiohttp.ClientSession() as session:
        shared = SlackDelivery(
            lambda token: AsyncWebClient(token=token, base_url=fake.base_url),
            ledger,
            session=session,
            http_timeout_s=5.0,
            allow_loopback_response_url=True,
        )
        with pytest.raises(aiohttp.ClientConnectionError) as caught:
            await shared.deliver("job-n", _data(response_url=dead_url), BOT_TOKEN, "the draft", offline=False)
        assert not isinstance(caught.value, UnrecoverableError | RetryAfter)
        assert not await ledger.delivered("job-n")
        with pytest.raises(aiohttp.ClientConnectionError):
            await shared.respond(dead_url, {"text": "a note"})
        # A failure note falls back to chat.postEphemeral rather than raising.
        assert await shared.tell_failure(_data(response_url=dead_url), BOT_TOKEN, "x")
        assert len(fake.calls_to("chat.postEphemeral")) == 1

        rerun = await shared.deliver(
            "job-n", _data(response_url=fake.response_url("n1")), BOT_TOKEN, "the draft", offline=False
        )
        assert rerun.via == "response_url"
        assert await ledger.delivered("job-n")
        assert not session.closed


async def test_expired_response_url_falls_back(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """A 404 expired_url from the response_url also falls back to chat.postEphemeral."""
    fake.fail_next(RESPONSE_URL_METHOD, error="expired_url", status=404)
    receipt = await delivery.deliver(
        "job-13", _data(response_url=fake.response_url("old")), BOT_TOKEN, "d", offline=False
    )
    assert receipt.via == "ephemeral"
    assert len(fake.calls_to("chat.postEphemeral")) == 1


async def test_tell_failure_posts_plain_words_and_never_raises(fake: FakeSlack, delivery: SlackDelivery) -> None:
    """tell_failure posts a plain-words apology (response_url or ephemeral); if it cannot, returns False, no raise."""
    assert await delivery.tell_failure(_data(), BOT_TOKEN, user_facing_reason(TimeoutError()))
    [call] = fake.calls_to("chat.postEphemeral")
    assert (
        call.params["text"]
        == "Sorry, I couldn't draft a reply: Slack is busy right now. Please try again in a few minutes."
    )

    command = _data(response_url=fake.response_url("f1"), trigger=TriggerKind.SLASH_COMMAND)
    assert await delivery.tell_failure(command, BOT_TOKEN, "the channel is archived")
    [post] = fake.response_posts["f1"]
    assert post == {
        "response_type": "ephemeral",
        "replace_original": True,
        "text": "Sorry, I couldn't draft a reply: the channel is archived.",
    }
    shortcut = _data(response_url=fake.response_url("f1s", replaceable=False), trigger=TriggerKind.MESSAGE_ACTION)
    assert await delivery.tell_failure(shortcut, BOT_TOKEN, "the channel is archived")
    [post] = fake.response_posts["f1s"]
    assert post["replace_original"] is False

    fake.fail_next("chat.postEphemeral", error="user_not_in_channel")
    assert await delivery.tell_failure(_data(), BOT_TOKEN, "whatever") is False
    fake.server_error_next(RESPONSE_URL_METHOD)
    fake.fail_next("chat.postEphemeral", error="channel_not_found")
    assert await delivery.tell_failure(_data(response_url=fake.response_url("f2")), BOT_TOKEN, "x") is False


def test_messages_escape_user_text() -> None:
    """Draft and failure texts escape &, < and > so user text cannot ping @channel or form links."""
    [blocks] = draft_blocks("Tell <!channel> & <@U123> that 2 > 1", offline=False)
    assert _draft_sections(blocks) == ["Tell &lt;!channel&gt; &amp; &lt;@U123&gt; that 2 &gt; 1"]
    assert escape_mrkdwn("a&b<c>") == "a&amp;b&lt;c&gt;"
    assert failure_text("<b> & co") == "Sorry, I couldn't draft a reply: &lt;b&gt; &amp; co."
    assert failure_text("Sorry, the AI is busy.") == "Sorry, the AI is busy."
    assert failure_text("  ").startswith("Sorry")
    # An unbroken run of escapable characters still splits without ever cutting an entity in two.
    for blocks in draft_blocks("<" * 4_000, offline=False):
        for text in _draft_sections(blocks):
            assert len(text) <= SECTION_MAX_CHARS
            assert html.unescape(text) == "<" * (len(text) // 4)


def test_empty_draft_still_makes_a_valid_message() -> None:
    """A blank draft yields one message with a non-empty section, so Slack never answers no_text."""
    [blocks] = draft_blocks("  \n\n ", offline=False)
    assert all(text.strip() for text in _section_texts(blocks))


async def test_token_sources(tmp_path: Path) -> None:
    """The static source returns its token without showing it; the store source finds installs or fails plainly."""
    static = StaticTokenSource(BOT_TOKEN)
    assert await static.bot_token(TEAM) == BOT_TOKEN
    assert BOT_TOKEN not in repr(static)

    store = FileInstallationStore(base_dir=str(tmp_path))
    await store.async_save(Installation(team_id=TEAM, bot_token=BOT_TOKEN, bot_id="B1", bot_user_id="U1", user_id="U2"))
    await store.async_save(
        Installation(
            enterprise_id="E0ORG",
            is_enterprise_install=True,
            bot_token="xoxb-org-token",
            bot_id="B2",
            bot_user_id="U3",
            user_id="U4",
        )
    )
    source = InstallationStoreTokenSource(store)
    assert await source.bot_token(TEAM) == BOT_TOKEN
    assert await source.bot_token("T0INORG", enterprise_id="E0ORG") == "xoxb-org-token"
    with pytest.raises(UnrecoverableError, match="the app is not installed in this workspace") as caught:
        await source.bot_token("T0NOWHERE")
    assert isinstance(caught.value, AppNotInstalledError)
    assert "install" in user_facing_reason(caught.value)


async def test_tokens_reach_slack_but_never_the_logs(
    fake: FakeSlack, delivery: SlackDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot token is sent as the Authorization header but appears in no log line, ours or slack_sdk's."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        await delivery.progress(_data(), BOT_TOKEN, "drafting")
        await delivery.deliver("job-14", _data(), BOT_TOKEN, "draft", offline=False)
        fake.server_error_next(RESPONSE_URL_METHOD)
        await delivery.progress(_data(response_url=fake.response_url("t1")), BOT_TOKEN, "drafting")
        fake.fail_next("chat.postEphemeral", error="invalid_auth")
        await delivery.tell_failure(_data(), BOT_TOKEN, "x")
        fake.fail_next("chat.postEphemeral", error="invalid_auth")
        with pytest.raises(UnrecoverableError):
            await delivery.deliver("job-15", _data(), BOT_TOKEN, "draft", offline=False)
    assert {call.token for call in fake.calls if call.method != RESPONSE_URL_METHOD} == {BOT_TOKEN}
    assert events, "the failures above should have been logged"
    assert caplog.records, "slack_sdk's debug logging should have been captured"
    assert BOT_TOKEN not in repr(events)
    assert all(BOT_TOKEN not in record.getMessage() for record in caplog.records)
    assert all("/response/" not in repr(event) for event in events)  # response_urls are capabilities too
