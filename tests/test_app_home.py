"""App Home through the real Bolt app and the fake Slack: the published Home tab, settings saved from it reaching the
model's prompt, style examples only with consent, delete-all, disconnect, and the fake refusing what Slack refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.queue import JobState
from slack_backend.slack import home_view as hv
from slack_backend.store import StyleExampleStore, create_engine, create_tables
from slack_backend.store.style_examples import MAX_EXAMPLES_PER_USER
from slack_backend.store.user_tokens import has_user_token
from tests.fakes.slack_home import MAX_VIEW_BLOCKS
from tests.fakes.slack_server import FakeSlack
from tests.support.home_requests import (
    OTHER,
    button_action,
    checkboxes_action,
    home_action_body,
    home_opened_body,
    select_action,
    text_action,
)
from tests.support.oauth import OAUTH, install
from tests.support.pipeline import Pipeline, PipelineFactory
from tests.support.slack_requests import BOT_TOKEN, CHANNEL, TEAM, USER, command_body, post_signed
from tests.test_work_once import finished

STYLE_MARKER = "zq-style-marker-7731"


async def draft_prompt(p: Pipeline, text: str, trigger_id: str) -> str:
    """Ask for a draft with /draft and return the prompt the fake model received for it."""
    before = len(p.claude.message_requests)
    response = await post_signed(p.client, command_body(p.slack, text=text, trigger_id=trigger_id))
    assert response.status_code == 200, response.text
    job = await finished(p.queue, trigger_id)
    assert job.state is JobState.COMPLETED, job.failed_reason
    assert len(p.claude.message_requests) == before + 1
    return str(p.claude.message_requests[-1].body["messages"])


async def click(p: Pipeline, action: dict[str, Any], *, user: str = USER) -> None:
    response = await post_signed(p.client, home_action_body(action, user=user))
    assert response.status_code == 200, response.text


def selected(view: dict[str, Any], action_id: str) -> str | None:
    """The value a select of the published view shows as chosen."""
    for block in view["blocks"]:
        elements = [block.get("accessory") or {}, *(block.get("elements") or [])]
        for element in elements:
            if element.get("action_id") == action_id:
                return str(element["initial_option"]["value"])
    return None


def view_text(view: dict[str, Any]) -> str:
    return json.dumps(view)


def assert_valid_home_view(view: dict[str, Any]) -> None:
    """Slack's limits, checked with slack_sdk's own block models: a home view of 1..100 valid blocks."""
    assert view["type"] == "home"
    assert 0 < len(view["blocks"]) <= MAX_VIEW_BLOCKS
    View(**view).to_dict()  # validates the nested blocks too (validate_json checks only the view itself)


async def test_home_opened_publishes_a_valid_view_with_the_users_settings_and_usage(pipeline: PipelineFactory) -> None:
    """app_home_opened -> views.publish of a valid Home view with the saved settings, Slack's tz and today's usage."""
    async with pipeline(WORKSPACE_DAILY_TOKEN_QUOTA="50000") as p:
        p.slack.add_person(USER, "Ana", tz="Europe/Amsterdam")
        await draft_prompt(p, "Can we meet at 3?", "trig.home.1")
        await click(p, select_action(hv.TONE_ACTION, "formal"))
        await click(p, text_action(hv.SIGNATURE_ACTION, "-- Ana"))
        response = await post_signed(p.client, home_opened_body())
        assert response.status_code == 200
        job = await p.queue.get("trig.home.1")
    publish = p.slack.calls_to("views.publish")[-1]
    assert publish.token == BOT_TOKEN
    assert publish.params["user_id"] == USER
    view = p.slack.home.latest_view(USER)
    assert_valid_home_view(view)
    assert selected(view, hv.TONE_ACTION) == "formal"
    assert selected(view, hv.LENGTH_ACTION) == hv.UNSET
    assert '"initial_value": "-- Ana"' in view_text(view)
    assert selected(view, hv.TIME_ZONE_ACTION) == "Europe/Amsterdam", "the time zone read from users.info"
    assert job is not None
    assert job.result is not None
    used = job.result["input_tokens"] + job.result["output_tokens"]
    assert f"today*: {used:,} of 50,000 tokens" in view_text(view)


async def test_a_changed_preference_changes_the_next_prompt_at_the_model(pipeline: PipelineFactory) -> None:
    """Before any setting the prompt has no preferences; after tone/length/language/signature it carries each."""
    async with pipeline() as p:
        before = await draft_prompt(p, "Are you coming Friday?", "trig.pref.1")
        await click(p, select_action(hv.TONE_ACTION, "formal"))
        await click(p, select_action(hv.LENGTH_ACTION, "brief"))
        await click(p, select_action(hv.LANGUAGE_ACTION, "Dutch"))
        await click(p, text_action(hv.INSTRUCTIONS_ACTION, "Never use exclamation marks"))
        await click(p, text_action(hv.SIGNATURE_ACTION, "-- Ana"))
        after = await draft_prompt(p, "Are you coming Friday?", "trig.pref.2")
        await click(p, select_action(hv.TONE_ACTION, hv.UNSET))
        cleared = await draft_prompt(p, "Are you coming Friday?", "trig.pref.3")
    assert "<my_preferences>" not in before
    for expected in ("Tone: formal", "Length: brief", "write the reply in Dutch", "Never use exclamation", "-- Ana"):
        assert expected in after, expected
    assert "Tone:" not in cleared, "unset clears that setting"
    assert "Length: brief" in cleared, "and only that one"


async def test_a_chosen_time_zone_wins_over_slacks_until_cleared(pipeline: PipelineFactory) -> None:
    """A zone picked on the Home tab is kept across opens; "From my Slack profile" goes back to users.info's tz."""
    async with pipeline(with_worker=False) as p:
        p.slack.add_person(USER, "Ana", tz="Asia/Kolkata")
        await click(p, select_action(hv.TIME_ZONE_ACTION, "America/Chicago"))
        await post_signed(p.client, home_opened_body())
        assert selected(p.slack.home.latest_view(USER), hv.TIME_ZONE_ACTION) == "America/Chicago"
        await click(p, select_action(hv.TIME_ZONE_ACTION, hv.UNSET))
        await post_signed(p.client, home_opened_body(event_id="EvHOME002"))
        assert selected(p.slack.home.latest_view(USER), hv.TIME_ZONE_ACTION) == "Asia/Kolkata"
        await click(p, select_action(hv.TIME_ZONE_ACTION, "Mars/Olympus"))
    assert "Not saved: time_zone must be an IANA zone" in view_text(p.slack.home.latest_view(USER))


async def test_an_out_of_range_setting_is_refused_with_a_reason_and_nothing_saved(pipeline: PipelineFactory) -> None:
    """A signature over its limit is not saved; the Home tab is published again saying why."""
    async with pipeline(with_worker=False) as p:
        await click(p, text_action(hv.SIGNATURE_ACTION, "x" * 101))
    view = p.slack.home.latest_view(USER)
    assert_valid_home_view(view)
    assert "Not saved: signature must be at most 100 characters" in view_text(view)
    assert '"initial_value"' not in view_text(view)


async def test_style_examples_reach_the_model_only_with_consent_and_delete_all_removes_them(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """Without consent no history is read and no example is sent; with it the user's own messages (read with their
    token) reach the model; delete-all empties the store and the Home tab shows 0."""
    async with pipeline(**OAUTH) as p:
        p.slack.enable_oauth(OAUTH["SLACK_CLIENT_ID"], OAUTH["SLACK_CLIENT_SECRET"])
        await install(p)
        p.slack.home.add_history(
            CHANNEL,
            [
                {"user": USER, "text": f"hey all, {STYLE_MARKER} quick one: ship it", "ts": "1700000100.000001"},
                {"user": OTHER, "text": "someone else's words", "ts": "1700000099.000001"},
                {"user": USER, "text": "joined", "ts": "1700000098.000001", "subtype": "channel_join"},
            ],
            members=[USER],
        )
        unconsented = await draft_prompt(p, "Status?", "trig.style.1")
        assert p.slack.calls_to("conversations.history") == [], "no consent: the history is not even read"
        await click(p, checkboxes_action(hv.LEARN_ACTION, [hv.LEARN_ON]))
        consented = await draft_prompt(p, "Status?", "trig.style.2")
        [read] = p.slack.calls_to("conversations.history")
        assert str(read.token).startswith("xoxp-"), "read with the user's own token"
        await post_signed(p.client, home_opened_body())
        assert "Style examples kept*: 1" in view_text(p.slack.home.latest_view(USER))
        await click(p, button_action(hv.STYLE_DELETE_ACTION, "all"))
        assert "Style examples kept*: 0" in view_text(p.slack.home.latest_view(USER))
        await click(p, checkboxes_action(hv.LEARN_ACTION, []))
        revoked = await draft_prompt(p, "Status?", "trig.style.3")
    assert STYLE_MARKER not in unconsented
    assert "<my_style_examples>" not in unconsented
    assert STYLE_MARKER in consented
    assert "someone else's words" not in consented.split("<my_style_examples>")[1], "only the user's own messages"
    assert STYLE_MARKER not in revoked


async def test_disconnect_from_home_deletes_the_user_token_and_offers_connect(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """Disconnect clears the user's token (the bot's stays); the republished Home tab links to /slack/connect."""
    async with pipeline(**OAUTH, PUBLIC_URL="https://drafts.example.com", with_worker=False) as p:
        p.slack.enable_oauth(OAUTH["SLACK_CLIENT_ID"], OAUTH["SLACK_CLIENT_SECRET"])
        await install(p)
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        try:
            assert await has_user_token(engine, TEAM, USER)
            await post_signed(p.client, home_opened_body())
            assert hv.DISCONNECT_ACTION in view_text(p.slack.home.latest_view(USER))
            await click(p, button_action(hv.DISCONNECT_ACTION, "disconnect"))
            assert not await has_user_token(engine, TEAM, USER)
        finally:
            await engine.dispose()
        await post_signed(p.client, command_body(p.slack, text="still works?", trigger_id="trig.after.disc"))
        assert (await p.queue.get("trig.after.disc")) is not None, "the bot token still authorizes requests"
    view = p.slack.home.latest_view(USER)
    assert_valid_home_view(view)
    assert '"url": "https://drafts.example.com/slack/connect"' in view_text(view)


async def test_style_store_keeps_the_newest_twenty_per_user(tmp_path: Path) -> None:
    """Past MAX_EXAMPLES_PER_USER the oldest examples go; a history ts seen before adds nothing; users are apart."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await create_tables(engine)
        store = StyleExampleStore(engine)
        for n in range(MAX_EXAMPLES_PER_USER + 5):
            await store.add_sent_edit(TEAM, USER, f"sent {n}")
        await store.add_history(TEAM, USER, [("1.1", "from history")])
        await store.add_history(TEAM, USER, [("1.1", "from history")])
        await store.add_sent_edit(TEAM, OTHER, "other user")
        kept = await store.examples(TEAM, USER)
        assert len(kept) == MAX_EXAMPLES_PER_USER == await store.count(TEAM, USER)
        assert kept[0] == "from history"
        assert kept.count("from history") == 1
        assert "sent 0" not in kept
        assert "sent 24" in kept
        assert await store.delete_all(TEAM, USER) == MAX_EXAMPLES_PER_USER
        assert await store.examples(TEAM, OTHER) == ["other user"]
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("view", "error"),
    [
        ({"type": "home", "blocks": [{"type": "divider"}] * (MAX_VIEW_BLOCKS + 1)}, "invalid_arguments"),
        ({"type": "modal", "blocks": [{"type": "divider"}]}, "invalid_arguments"),
        (
            {"type": "home", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]},
            "invalid_arguments",
        ),
        (
            {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 300_000}}]},
            "view_too_large",
        ),
    ],
)
async def test_fake_views_publish_refuses_what_slack_refuses(
    slack: FakeSlack, view: dict[str, Any], error: str
) -> None:
    """The fake's views.publish refuses 101 blocks, a non-home view, an invalid block and a view over 250 kB."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.base_url)
    with pytest.raises(SlackApiError) as refused:
        await client.views_publish(user_id=USER, view=view)
    assert refused.value.response["error"] == error
    assert slack.home.published == {}


def test_home_view_stays_within_slacks_limits_at_its_largest() -> None:
    """With every setting filled and the most watches a user may have, the view is valid and under 100 blocks."""
    from slack_backend.store import Preferences
    from slack_backend.store.watches import MAX_WATCHES_PER_USER

    prefs = Preferences("formal", "brief", "Dutch", "i" * 500, "s" * 100, True, 22, 7, "Europe/Amsterdam")
    state = hv.HomeState(
        prefs,
        hv.Usage(10**9, 10**9, 10**10),
        hv.Account(None, True),
        tuple(f"C{n:08d}" for n in range(MAX_WATCHES_PER_USER)),
        20,
        notice="n" * 200,
    )
    view = hv.home_view(state)
    assert_valid_home_view(view)
    assert len(json.dumps(view).encode()) < 250_000
