"""The suggestion card as a user drives it: signed Slack requests -> real web app and worker -> fake Claude and
fake Slack (views, posts as the user, response_urls)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.oauth.installation_store import Installation

from slack_backend.jobs.card_jobs import GONE_TEXT, queue_card_job
from slack_backend.queue import JobState
from slack_backend.slack import card
from slack_backend.store import (
    AuditLog,
    PreferenceStore,
    StyleExampleStore,
    SuggestionStore,
    TokenCipher,
    WatchStore,
    create_engine,
    create_tables,
    installation_store,
    thread_key,
)
from tests.fakes.anthropic_server import Behaviour
from tests.fakes.slack_server import FakeSlack
from tests.support.card_requests import Click, click, edit_values, refine_values, submit
from tests.support.engine import wait_until
from tests.support.pipeline import Pipeline, PipelineFactory
from tests.support.slack_requests import BOT_TOKEN, CHANNEL, TEAM, THREAD_TS, USER, post_signed, shortcut_body
from tests.test_pipeline import job_ended

CLIENT_ID = "1111.2222"
PUBLIC_URL = "https://drafts.example.com"
KEY = TokenCipher.new_key()
OAUTH = {
    "SLACK_BOT_TOKEN": "",
    "SLACK_CLIENT_ID": CLIENT_ID,
    "SLACK_CLIENT_SECRET": "oauth-secret-000",
    "TOKEN_ENCRYPTION_KEY": KEY,
    "PUBLIC_URL": PUBLIC_URL,
}
OTHER_USER = "U0OTHER9"

Connect = Callable[..., "contextlib.AbstractAsyncContextManager[Pipeline]"]


@pytest.fixture
def connected(pipeline: PipelineFactory, tmp_path: Path) -> Connect:
    """`async with connected(user_scopes=...) as p:` an OAuth-mode pipeline whose user connected their account
    (a user token with `user_scopes`; None: not connected)."""

    @contextlib.asynccontextmanager
    async def run(
        *, user_scopes: tuple[str, ...] | None = ("chat:write",), **overrides: str
    ) -> AsyncIterator[Pipeline]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        try:
            await create_tables(engine)
            async with pipeline(**OAUTH, **overrides) as p:
                user_token = p.slack.ui.user_token(USER, user_scopes or ()) if user_scopes is not None else None
                await installation_store(engine, CLIENT_ID, TokenCipher([KEY])).async_save(
                    Installation(
                        app_id="A0APP1",
                        enterprise_id=None,
                        team_id=TEAM,
                        user_id=USER,
                        bot_token=BOT_TOKEN,
                        bot_id="B0BOT1",
                        bot_user_id="U0FAKEBOT",
                        bot_scopes=["commands", "chat:write"],
                        user_token=user_token,
                        user_scopes=list(user_scopes or ()),
                    )
                )
                yield p
        finally:
            await engine.dispose()

    return run


async def draft_card(p: Pipeline, text: str = "Can you send me the Q3 numbers?") -> str:
    """Use the shortcut and wait for its card; the suggestion id its buttons carry."""
    assert (await post_signed(p.client, shortcut_body(p.slack, text=text))).status_code == 200

    async def carded() -> bool:
        return any(post.get("blocks") for post in p.slack.response_posts.get("shortcut1", []))

    await wait_until(carded, timeout_s=15)
    [post] = p.slack.response_posts["shortcut1"]
    return button_values(post["blocks"])


def button_values(blocks: list[dict[str, Any]]) -> str:
    """The one value every button of a card carries (the suggestion id), checking they agree."""
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == list(card.CARD_ACTIONS)
    values = {str(e["value"]) for e in actions["elements"]}
    assert len(values) == 1
    return values.pop()


def shown(slack: FakeSlack, response_id: str) -> str:
    """The text of what the card a response_url belongs to shows now (replaced, deleted or untouched)."""
    current = slack.ui.cards.get(response_id, {})
    if current is None:
        return "<deleted>"
    return " ".join(
        str(element.get("text", "")) if isinstance(element, dict) else ""
        for block in current.get("blocks") or []
        for element in [block.get("text", {}), *block.get("elements", [])]
    )


async def press(p: Pipeline, action_id: str, suggestion_id: str, *, user: str = USER) -> Click:
    c = click(p.slack, action_id, suggestion_id, user=user)
    response = await post_signed(p.client, c.body)
    assert response.status_code == 200
    return c


async def answered(p: Pipeline, c: Click) -> list[dict[str, Any]]:
    """The posts a click's response_url received, once there is at least one."""

    async def any_post() -> bool:
        return bool(p.slack.response_posts.get(c.response_id))

    await wait_until(any_post, timeout_s=15)
    return p.slack.response_posts[c.response_id]


async def refine(p: Pipeline, suggestion_id: str, values: dict[str, Any], new_text: str) -> Click:
    """Refine through the modal; waits for the card (at the click's response_url) to show the new draft."""
    p.claude.script(Behaviour.success(text=new_text))
    c = await press(p, card.REFINE, suggestion_id)
    view = p.slack.ui.opened[-1]
    assert view["callback_id"] == card.REFINE_VIEW
    response = await post_signed(p.client, submit(p.slack, view, values))
    assert response.status_code == 200
    assert response.content in (b"", b"{}"), "the modal closes"

    async def updated() -> bool:
        return new_text in shown(p.slack, c.response_id)

    await wait_until(updated, timeout_s=15)
    return c


async def suggestions_of(tmp_path: Path) -> SuggestionStore:
    return SuggestionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"))


async def test_shortcut_card_refine_twice_then_edit_and_send(connected: Connect, tmp_path: Path) -> None:
    """Shortcut -> card -> refine twice (each updates the card in place) -> edit & send: the edited text is posted
    once, as the user, into the thread; the draft keeps both refinements and the sent edit."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        first = await refine(p, suggestion_id, refine_values(preset="shorter"), "Q3 numbers by Friday?")
        second = await refine(
            p, suggestion_id, refine_values(preset="translate", language="German"), "Q3-Zahlen bis Freitag?"
        )
        edit = await press(p, card.EDIT, suggestion_id)
        view = p.slack.ui.opened[-1]
        assert view["callback_id"] == card.EDIT_VIEW
        assert view["blocks"][0]["element"]["initial_value"] == "Q3-Zahlen bis Freitag?"
        edited = "Q3-Zahlen bis Freitag, bitte?"
        assert (await post_signed(p.client, submit(p.slack, view, edit_values(edited)))).status_code == 200

        async def sent() -> bool:
            return "Sent as you" in shown(p.slack, edit.response_id)

        await wait_until(sent)
        store = await suggestions_of(tmp_path)
        saved = await store.get(suggestion_id)
        history = await store.revisions(suggestion_id)
        audited = {row.job_id: row for row in await AuditLog(store._engine).recent()}
        await store._engine.dispose()

    [post] = p.slack.ui.posted_as(USER)
    assert (post.channel, post.thread_ts, post.text) == (CHANNEL, THREAD_TS, edited)
    assert post.token.startswith("xoxp"), "posted with the user's own token"
    assert "Q3 numbers by Friday?" in shown(p.slack, first.response_id)
    assert "revision 2" in shown(p.slack, second.response_id)
    assert [(r.number, r.kind, r.instruction, r.text) for r in history] == [
        (1, "refine", "Make it shorter.", "Q3 numbers by Friday?"),
        (2, "refine", "Translate it into German.", "Q3-Zahlen bis Freitag?"),
    ]
    assert history[1].previous_text == history[0].text
    for revision in history:
        row = audited[revision.id]
        assert (row.status, row.input_tokens) == ("completed", revision.input_tokens), "counted toward the quota"
    assert saved is not None
    assert (saved.sent_text, saved.edited, saved.sent_ts) == (edited, True, post.ts)
    refine_prompts = [str(r.body["messages"]) for r in p.claude.message_requests[1:]]
    assert "Make it shorter." in refine_prompts[0]
    assert "Translate it into German." in refine_prompts[1]
    assert "<draft>\\nQ3 numbers by Friday?\\n</draft>" in refine_prompts[1], (
        "the second refine works on the first's text"
    )


async def test_double_click_on_send_as_me_posts_once(connected: Connect) -> None:
    """Two clicks on Send as me at once: one post as the user; the other click is told it was sent already."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        clicks = [click(p.slack, card.SEND, suggestion_id) for _ in range(2)]
        await asyncio.gather(*(post_signed(p.client, c.body) for c in clicks))
        for c in clicks:
            await answered(p, c)
        await asyncio.sleep(0.2)  # room for a second (wrong) post to land

    [post] = p.slack.ui.posted_as(USER)
    assert post.text.startswith("Draft: ")
    words = sorted(shown(p.slack, c.response_id) for c in clicks)
    assert any("Sent as you" in w for w in words)
    assert any("already sent" in w for w in words)


async def test_clicks_reuse_the_first_authorization(connected: Connect) -> None:
    """Bolt asks Slack's auth.test for the user's first request only, not again before each click's ack."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        asked = sum(call.method == "auth.test" for call in p.slack.calls)
        for action in (card.REGENERATE, card.SEND):
            p.claude.script(Behaviour.success(text="Again: the Q3 numbers are attached."))
            c = await press(p, action, suggestion_id)

            async def replaced(response_id: str = c.response_id) -> bool:
                return bool(p.slack.ui.card_changed_s.get(response_id))

            await wait_until(replaced, timeout_s=15)

    assert asked >= 1
    assert sum(call.method == "auth.test" for call in p.slack.calls) == asked
    assert "Sent as you" in shown(p.slack, c.response_id), "Send as me still posts through the shared clients"


async def test_send_or_edit_without_a_connected_account_offers_the_connect_link(connected: Connect) -> None:
    """No user token: Send as me and Edit & send post nothing and open no modal; the card stays, and a note links
    to /slack/connect."""
    async with connected(user_scopes=None) as p:
        suggestion_id = await draft_card(p)
        notes = [(await answered(p, await press(p, action, suggestion_id)))[0] for action in (card.SEND, card.EDIT)]

    assert p.slack.ui.messages == []
    assert p.slack.ui.opened == []
    for note in notes:
        assert note["replace_original"] is False, "the card stays for Copy"
        assert f"{PUBLIC_URL}/slack/connect" in note["text"]


async def test_a_token_without_chat_write_is_refused_and_the_draft_can_be_sent_later(
    connected: Connect, tmp_path: Path
) -> None:
    """Slack refuses the post (missing_scope): the user hears why in plain words and the draft stays unsent."""
    async with connected(user_scopes=("channels:history",)) as p:
        suggestion_id = await draft_card(p)
        c = await press(p, card.SEND, suggestion_id)
        [note] = await answered(p, c)
        store = await suggestions_of(tmp_path)
        saved = await store.get(suggestion_id)
        await store._engine.dispose()

    assert p.slack.ui.messages == []
    assert "connect it again" in note["text"]
    assert saved is not None
    assert saved.sent_at is None, "released: a later Send may succeed"


async def test_dismiss_deletes_the_card(connected: Connect) -> None:
    """Dismiss: the card's response_url gets delete_original, and nothing is posted."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        c = await press(p, card.DISMISS, suggestion_id)
        [post] = await answered(p, c)

    assert post == {"delete_original": True}
    assert shown(p.slack, c.response_id) == "<deleted>"
    assert p.slack.ui.messages == []


async def test_regenerate_drafts_again_and_updates_the_card_in_place(connected: Connect) -> None:
    """Regenerate: a second model call from the same source message; the clicked card is replaced by the new one."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        p.claude.script(Behaviour.success(text="A fresh take on the Q3 numbers."))
        c = await press(p, card.REGENERATE, suggestion_id)

        async def replaced() -> bool:
            return "A fresh take" in shown(p.slack, c.response_id)

        await wait_until(replaced, timeout_s=15)

    _, second = p.claude.message_requests
    assert "Q3 numbers" in str(second.body["messages"])
    [post] = p.slack.response_posts[c.response_id]
    assert post["replace_original"] is True
    assert button_values(post["blocks"]) == suggestion_id, "the new card acts on the same draft"


async def test_regenerate_over_the_daily_quota_tells_the_user_and_calls_no_model(connected: Connect) -> None:
    """With the workspace's quota used up by the first draft, Regenerate answers with the quota's plain words (when
    it resets) and makes no second model call; the card stays as it was."""
    async with connected(WORKSPACE_DAILY_TOKEN_QUOTA="1") as p:
        suggestion_id = await draft_card(p)
        c = await press(p, card.REGENERATE, suggestion_id)
        [note] = await answered(p, c)
        job = await job_ended(p.queue, f"regenerate-{suggestion_id}-r0")
    assert job.state == JobState.COMPLETED
    assert job.result == {"delivered_via": "quota_notice", "revised": False}
    assert len(p.claude.message_requests) == 1, "no model call over the quota"
    assert "used today's AI quota (1 tokens)" in note["text"]
    assert "resets at 00:00 UTC" in note["text"]
    assert note.get("replace_original") is not True, "the card stays"


async def test_double_click_on_regenerate_pays_once_and_a_later_click_regenerates_again(connected: Connect) -> None:
    """Two clicks on Regenerate at once make one model call (one job per card revision); a click on the new card
    regenerates again."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        p.claude.script(Behaviour.success(text="A fresh take on the Q3 numbers."))
        clicks = [click(p.slack, card.REGENERATE, suggestion_id) for _ in range(2)]
        await asyncio.gather(*(post_signed(p.client, c.body) for c in clicks))

        async def replaced() -> bool:
            return any("A fresh take" in shown(p.slack, c.response_id) for c in clicks)

        await wait_until(replaced, timeout_s=15)
        await asyncio.sleep(0.3)  # room for a second (wrong) job to reach the model
        calls_after_double_click = len(p.claude.message_requests)
        p.claude.script(Behaviour.success(text="Yet another take."))
        again = await press(p, card.REGENERATE, suggestion_id)

        async def replaced_again() -> bool:
            return "Yet another take" in shown(p.slack, again.response_id)

        await wait_until(replaced_again, timeout_s=15)

    assert calls_after_double_click == 2, "the first draft and one regeneration"
    assert len(p.claude.message_requests) == 3


async def test_stale_cards_answer_in_plain_words(connected: Connect, tmp_path: Path) -> None:
    """A card whose draft is gone, or was sent, says so in plain words; no modal opens and nothing is posted."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        sent = await press(p, card.SEND, suggestion_id)
        await answered(p, sent)
        refine_after = await press(p, card.REFINE, suggestion_id)
        [already] = await answered(p, refine_after)
        store = await suggestions_of(tmp_path)
        await store.discard(suggestion_id)
        await store._engine.dispose()
        copy_after = await press(p, card.COPY, suggestion_id)
        [gone] = await answered(p, copy_after)

    assert "already sent" in already["text"]
    assert gone["text"] == GONE_TEXT
    assert gone["replace_original"] is True
    assert p.slack.ui.opened == []
    assert len(p.slack.ui.messages) == 1


async def test_someone_elses_click_is_refused(connected: Connect) -> None:
    """Another user's click (a forwarded payload) is refused in plain words: no post, no modal, no job."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        for action in (card.SEND, card.EDIT, card.REGENERATE, card.DISMISS):
            c = await press(p, action, suggestion_id, user=OTHER_USER)
            [note] = await answered(p, c)
            assert "Only the person" in note["text"]
            assert note["replace_original"] is False
        jobs = (await p.queue.counts())[JobState.COMPLETED]

    assert p.slack.ui.messages == []
    assert p.slack.ui.opened == []
    assert jobs == 1, "only the draft itself ran"


async def test_copy_opens_the_plain_text(connected: Connect) -> None:
    """Copy: a modal whose sections hold the draft as plain_text (no mrkdwn), so it copies as drafted."""
    async with connected() as p:
        p.claude.script(Behaviour.success(text="Sure <b> & *soon*"))
        suggestion_id = await draft_card(p)
        await press(p, card.COPY, suggestion_id)
        [view] = p.slack.ui.opened

    assert view["callback_id"] == card.COPY_VIEW
    assert [b["text"] for b in view["blocks"]] == [{"type": "plain_text", "text": "Sure <b> & *soon*", "emoji": False}]


async def test_refine_of_a_gone_draft_fails_at_once_with_a_plain_note(connected: Connect) -> None:
    """A refine job whose suggestion is gone fails on its first attempt, with no model call; the card says so."""
    async with connected() as p:
        url = p.slack.response_url("gonecard")
        data = {
            "kind": "refine",
            "suggestion_id": "no-such-draft",
            "workspace_id": TEAM,
            "user_id": USER,
            "channel_id": CHANNEL,
            "instruction": "Make it shorter.",
            "response_url": url,
        }
        await queue_card_job(p.queue, data, job_id="refine-gone", max_output_tokens=256)
        job = await job_ended(p.queue, "refine-gone")

        async def told() -> bool:
            return bool(p.slack.response_posts.get("gonecard"))

        await wait_until(told)

    assert (job.state, job.attempts_made) == (JobState.FAILED, 1)
    assert p.claude.message_requests == []
    assert shown(p.slack, "gonecard").strip() == GONE_TEXT


async def test_refine_jobs_obey_the_ai_rate_limit(connected: Connect) -> None:
    """Refines are ai-responses jobs: with 1 model call per 400 ms, the fake model's receive clock sees the
    draft and three refines spaced by the window (within 10%: the machine is shared and loaded)."""
    async with connected(AI_RATE_LIMIT_MAX="1", AI_RATE_LIMIT_DURATION_MS="400") as p:
        suggestion_id = await draft_card(p)
        views = []
        for _ in range(3):
            await press(p, card.REFINE, suggestion_id)
            views.append(p.slack.ui.opened[-1])
        for view in views:
            await post_signed(p.client, submit(p.slack, view, refine_values(preset="friendly")))

        async def all_called() -> bool:
            return len(p.claude.message_requests) == 4

        await wait_until(all_called, timeout_s=20)

    times = [r.received_s for r in p.claude.message_requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.4 * 0.9, gaps


async def test_a_rerun_of_a_refine_job_pays_and_posts_nothing_new(connected: Connect, tmp_path: Path) -> None:
    """Work once: running a finished refine job again (a stall's rerun) makes no model call, no second revision
    and no second post to the card."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        c = await refine(p, suggestion_id, refine_values(preset="formal"), "Dear colleague, the Q3 numbers?")
        job_id = f"refine-{p.slack.ui.opened[-1]['id']}"  # one refine job per modal
        job = await job_ended(p.queue, job_id)
        assert job.state is JobState.COMPLETED
        calls, posts = len(p.claude.message_requests), len(p.slack.response_posts[c.response_id])
        assert p.worker is not None
        result = await p.worker.processor(job)
        store = await suggestions_of(tmp_path)
        history = await store.revisions(suggestion_id)
        await store._engine.dispose()

    assert result["revision"] == 1
    assert len(p.claude.message_requests) == calls
    assert len(p.slack.response_posts[c.response_id]) == posts
    assert [r.id for r in history] == [job_id]


async def test_a_used_up_response_url_gets_the_new_card_as_a_fresh_ephemeral_message(connected: Connect) -> None:
    """When the clicked card's response_url is refused (expired), the refined card is posted with
    chat.postEphemeral to the user, in the draft's thread, instead of being lost."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        p.claude.script(Behaviour.success(text="Friendlier Q3 ask"))
        await press(p, card.REFINE, suggestion_id)
        p.slack.fail_next("response_url", error="expired_url", status=404)
        await post_signed(p.client, submit(p.slack, p.slack.ui.opened[-1], refine_values(preset="friendly")))

        async def reposted() -> bool:
            return any("Friendlier" in str(c.params.get("blocks")) for c in p.slack.calls_to("chat.postEphemeral"))

        await wait_until(reposted, timeout_s=15)

    [call] = [c for c in p.slack.calls_to("chat.postEphemeral") if "Friendlier" in str(c.params.get("blocks"))]
    assert (call.params["user"], call.params["channel"], call.params["thread_ts"]) == (USER, CHANNEL, THREAD_TS)
    blocks = call.params["blocks"]
    assert button_values(json.loads(blocks) if isinstance(blocks, str) else blocks) == suggestion_id


@pytest.mark.parametrize(
    ("consent", "edit"),
    [(True, "Numbers by Friday, please?"), (False, "Numbers by Friday, please?"), (True, None)],
    ids=["edited-with-consent", "edited-without-consent", "unedited-with-consent"],
)
async def test_an_edited_send_becomes_a_style_example_only_with_consent(
    connected: Connect, tmp_path: Path, consent: bool, edit: str | None
) -> None:
    """Edit & send keeps the sent text as one of the user's style examples when they allowed learning from their
    messages; without consent, or for a draft sent as it was, nothing is kept."""
    async with connected() as p:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await PreferenceStore(engine).update(TEAM, USER, learn_from_messages=consent)
        suggestion_id = await draft_card(p)
        if edit is None:
            c = await press(p, card.SEND, suggestion_id)
        else:
            c = await press(p, card.EDIT, suggestion_id)
            view = p.slack.ui.opened[-1]
            assert (await post_signed(p.client, submit(p.slack, view, edit_values(edit)))).status_code == 200

        async def sent() -> bool:
            return "Sent as you" in shown(p.slack, c.response_id)

        await wait_until(sent)
        examples = await StyleExampleStore(engine).examples(TEAM, USER)
        await engine.dispose()
    assert len(p.slack.ui.posted_as(USER)) == 1
    assert examples == ([edit] if consent and edit is not None else [])


async def test_dismissing_a_card_frees_its_thread_for_the_next_passive_suggestion(
    connected: Connect, tmp_path: Path
) -> None:
    """A card that holds its thread's one open passive suggestion releases it when dismissed."""
    async with connected() as p:
        suggestion_id = await draft_card(p)
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        saved = await SuggestionStore(engine).get(suggestion_id)
        assert saved is not None
        watches = WatchStore(engine)
        key = thread_key(saved.thread_ts, saved.source_ts or "", is_dm=False)
        assert await watches.open_suggestion(TEAM, USER, saved.channel_id, key)
        assert not await watches.open_suggestion(TEAM, USER, saved.channel_id, key), "one open per thread"
        await answered(p, await press(p, card.DISMISS, suggestion_id))
        reopened = await watches.open_suggestion(TEAM, USER, saved.channel_id, key)
        await engine.dispose()
    assert reopened, "the dismissed card freed its thread"
