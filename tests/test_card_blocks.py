"""The card and its modals within Slack's Block Kit limits (slack_sdk's models and the documented sizes), and the
fake Slack refusing what Slack refuses for views and posts as a user."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.slack import card
from slack_backend.slack.messages import MESSAGE_MAX_BLOCKS, MESSAGE_MAX_TEXT_CHARS, SECTION_MAX_CHARS
from tests.fakes.slack_server import FakeSlack
from tests.support.slack_requests import BOT_TOKEN, CHANNEL, USER

SUGGESTION = "944799105734.773906753841.38b5894552bdd4a780554ee59d1f3638"
LONG = "\n\n".join(f"Paragraph {i}: the numbers <are> in & ready, " + "word " * 120 for i in range(40))


@pytest.mark.parametrize("text", ["Sure, Friday works.", LONG, "x" * 7_000, ""])
def test_card_stays_within_slacks_message_limits(text: str) -> None:
    """Any draft makes one card: sections of at most 3,000 chars, at most 50 blocks, its text under the message
    cap; every block parses back through slack_sdk's models; the buttons carry the suggestion id and nothing else."""
    message = card.card_message(card.CardDraft(SUGGESTION, text, cut_short=True, replies_to="Can you?"))
    assert len(message.blocks) <= MESSAGE_MAX_BLOCKS
    sections = [b for b in message.blocks if b["type"] == "section"]
    assert all(len(b["text"]["text"]) <= SECTION_MAX_CHARS for b in sections)
    assert sum(len(b["text"]["text"]) for b in sections) <= MESSAGE_MAX_TEXT_CHARS
    for block in message.blocks:
        parsed = Block.parse(block)
        assert parsed is not None
        assert parsed.to_dict() == block
    [actions] = [b for b in message.blocks if b["type"] == "actions"]
    assert {e["value"] for e in actions["elements"]} == {SUGGESTION}
    assert "cut short" in json.dumps(message.blocks)
    if text == LONG:
        assert card.TOO_LONG_FOR_CARD_TEXT in json.dumps(message.blocks)
        assert "&lt;are&gt; in &amp; ready" in json.dumps(message.blocks), "draft text is escaped"


@pytest.mark.parametrize(
    "draft",
    [
        card.CardDraft(SUGGESTION, "Sure, Friday works."),
        card.CardDraft(SUGGESTION, "Sure.", offline=True, revision=3, notes=("<https://x.example|Connect>",)),
        card.CardDraft(SUGGESTION, "a *b* <c> & d", replies_to="x" * 500, cut_short=True, notes=("one", "two")),
    ],
)
def test_every_card_block_is_what_slack_sdks_models_make_of_it(draft: card.CardDraft) -> None:
    """The card's blocks are built as plain dicts: each one parses through slack_sdk's models (whose to_dict()
    validates) back to itself, header, offline label, sections, notes and buttons alike."""
    message = card.card_message(draft)
    for block in message.blocks:
        parsed = Block.parse(block)
        assert parsed is not None
        assert parsed.to_dict() == block
    assert [b["type"] for b in message.blocks][-1] == "actions"
    assert ("warning" in json.dumps(message.blocks[1])) is draft.offline


def test_modals_hold_the_whole_draft_within_input_and_view_limits() -> None:
    """Edit splits a long draft across inputs of at most 3,000 chars and joins them back to the same words;
    Copy shows it as plain_text; each view passes slack_sdk's View validation (title, blocks, metadata)."""
    url = "http://127.0.0.1:1/response/x"
    edit = card.edit_view(SUGGESTION, LONG, response_url=url)
    inputs = [b["element"] for b in edit["blocks"]]
    assert all(len(e["initial_value"]) <= card.INPUT_MAX_CHARS == e["max_length"] for e in inputs)
    values = {b["block_id"]: {"text": {"value": b["element"]["initial_value"]}} for b in edit["blocks"]}
    assert card.edited_text(values).split() == LONG.split()
    meta = card.read_metadata(edit["private_metadata"])
    assert meta == card.CardMetadata(SUGGESTION, url)
    copy = card.copy_view(LONG)
    assert {b["text"]["type"] for b in copy["blocks"]} == {"plain_text"}
    for view in (edit, copy, card.refine_view(SUGGESTION, response_url=url)):
        assert len(view["blocks"]) <= card.VIEW_MAX_BLOCKS
        View(**{k: v for k, v in view.items()}).validate_json()


def test_refine_presets_and_words_make_one_instruction() -> None:
    """A preset, a translate with its language, and free words combine; nothing chosen keeps the modal open."""
    values = {
        "preset": {"preset": {"selected_option": {"value": "translate"}}},
        "language": {"language": {"value": "German"}},
        "instruction": {"instruction": {"value": "keep the emoji"}},
    }
    assert card.refine_instruction(values) == ("Translate it into German. keep the emoji", {})
    assert card.refine_instruction({"preset": {"preset": {"selected_option": {"value": "translate"}}}})[1] == {
        "language": "Say which language to translate it into."
    }
    instruction, errors = card.refine_instruction({})
    assert instruction is None
    assert set(errors) == {"instruction"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN) as slack:
        yield slack


async def test_fake_views_open_needs_a_fresh_unused_trigger(fake: FakeSlack) -> None:
    """views.open: unknown trigger -> invalid_trigger_id, used -> exchanged_trigger_id, older than 3 s ->
    expired_trigger_id, an oversized title -> invalid_arguments; a good one opens the view."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
    view = card.copy_view("hello")
    errors = []
    for trigger in ("nope", fake.ui.trigger_id(issued_at=time.monotonic() - 4)):
        with pytest.raises(SlackApiError) as refused:
            await client.views_open(trigger_id=trigger, view=view)
        errors.append(refused.value.response["error"])
    good = fake.ui.trigger_id()
    with pytest.raises(SlackApiError) as too_long:
        await client.views_open(trigger_id=good, view={**view, "title": {"type": "plain_text", "text": "t" * 25}})
    opened = await client.views_open(trigger_id=good, view=view)
    with pytest.raises(SlackApiError) as reused:
        await client.views_open(trigger_id=good, view=view)
    assert errors == ["invalid_trigger_id", "expired_trigger_id"]
    assert too_long.value.response["error"] == "invalid_arguments"
    assert reused.value.response["error"] == "exchanged_trigger_id"
    view_id = opened["view"]["id"]
    with pytest.raises(SlackApiError) as conflict:
        await client.views_update(view_id=view_id, hash="stale", view=view)
    assert conflict.value.response["error"] == "hash_conflict"
    updated = await client.views_update(view_id=view_id, hash=opened["view"]["hash"], view=view)
    assert updated["view"]["id"] == view_id


async def test_fake_posts_as_a_user_only_with_chat_write_where_they_are_a_member(fake: FakeSlack) -> None:
    """chat.postMessage with a user token posts as that user; missing_scope without chat:write, not_in_channel
    outside their channels; chat.delete removes only their own message."""
    fake.ui.members[CHANNEL] = {USER}
    writer = AsyncWebClient(token=fake.ui.user_token(USER), base_url=fake.base_url)
    reader = AsyncWebClient(token=fake.ui.user_token(USER, ("channels:history",)), base_url=fake.base_url)
    outsider = AsyncWebClient(token=fake.ui.user_token("U0OUT1"), base_url=fake.base_url)
    posted = await writer.chat_postMessage(channel=CHANNEL, text="hi", thread_ts="1.000001")
    refusals = []
    for client in (reader, outsider):
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel=CHANNEL, text="hi")
        refusals.append(refused.value.response["error"])
    with pytest.raises(SlackApiError) as cannot:
        await outsider.chat_delete(channel=CHANNEL, ts=posted["ts"])
    assert refusals == ["missing_scope", "not_in_channel"]
    assert cannot.value.response["error"] == "cant_delete_message"
    [message] = fake.ui.posted_as(USER)
    assert (message.text, message.thread_ts, posted["message"]["user"]) == ("hi", "1.000001", USER)
    await writer.chat_delete(channel=CHANNEL, ts=posted["ts"])
    assert fake.ui.messages == []


def test_a_refined_draft_reaches_the_model_whole_beside_a_short_instruction() -> None:
    """A refine sends the current draft in its own <draft> part: a 6,000-char draft is not clipped to the
    instruction's 4,000."""
    from slack_backend.ai import DraftRequest
    from slack_backend.ai.prompt import build_messages
    from slack_backend.jobs.card_jobs import refine_instruction

    draft = "word " * 1_200
    request = DraftRequest("Can you?", (), USER, refine_instruction("Make it shorter."), previous_draft=draft)
    [message] = build_messages(request)
    content = str(message["content"])
    assert f"<draft>\n{draft}\n</draft>" in content
    assert content.index("<draft>") < content.index("<instructions>")
