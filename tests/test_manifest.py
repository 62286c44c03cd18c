"""The Slack app manifest against what the code listens to, and the `manifest` command a new user runs."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from redis.asyncio import Redis

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.slack.tokens import USER_SCOPES
from slack_backend.web.app import SLACK_EVENTS_PATH
from slack_backend.web.ingress import INSTALL_PATH, OAUTH_SCOPES, REDIRECT_URI_PATH, build_bolt_app
from slack_backend.web.manifest import build_manifest
from tests.test_config import run_cli

BASE = "https://drafts.example.com"
# Block actions need no manifest entry (interactivity's one request URL serves them all).
NOT_IN_MANIFEST = {"action"}


def listened(slash_command: str) -> dict[str, set[str]]:
    """What the real Bolt app's listeners match: {"message_shortcut": {callback ids}, "command": ..., "event": ...}.

    Read from Bolt's own matchers (each closes over the value it was registered with), so a listener added
    without a manifest entry shows up here.
    """
    settings = load_settings({"SLACK_SIGNING_SECRET": "s", "SLACK_SLASH_COMMAND": slash_command})
    app = build_bolt_app(settings, ai_responses_queue(Redis(), settings), signing_secret="s")
    found: dict[str, set[str]] = defaultdict(set)
    for listener in app._async_listeners:
        for matcher in listener.matchers:
            inner = matcher.func.__closure__[0].cell_contents  # type: ignore[attr-defined]
            kind = inner.__qualname__.split(".")[0]
            found[kind].update(str(cell.cell_contents) for cell in inner.__closure__ or [])
    return found


def manifest_sets(manifest: dict[str, Any]) -> dict[str, set[str]]:
    features, settings = manifest["features"], manifest["settings"]
    return {
        "message_shortcut": {s["callback_id"] for s in features["shortcuts"] if s["type"] == "message"},
        "command": {c["command"] for c in features["slash_commands"]},
        # Slack's message.channels / .groups / .im / .mpim all reach Bolt's one `message` listener.
        "event": {e.split(".")[0] for e in settings["event_subscriptions"]["bot_events"]},
    }


@pytest.mark.parametrize("slash_command", ["/draft", "/reply-for-me"])
def test_manifest_lists_exactly_what_the_listeners_match(slash_command: str) -> None:
    """Shortcut callback ids, slash commands and bot events in the manifest are exactly the code's listeners."""
    manifest = build_manifest(BASE, slash_command=slash_command)
    code = listened(slash_command)
    acted_on = {kind: values for kind, values in code.items() if kind not in NOT_IN_MANIFEST}
    assert manifest_sets(manifest) == acted_on
    # Built without a database: the card's buttons and modals are checked in the test below; "action" is App Home's.
    assert set(code) == {"message_shortcut", "command", "event", "action"}
    bot_events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert {"message.channels", "message.groups", "message.im", "message.mpim"} <= set(bot_events)
    home = manifest["features"]["app_home"]
    assert not home["messages_tab_enabled"], "no listener answers a DM to the app itself, so users cannot write one"
    assert home["home_tab_enabled"], "app_home_opened publishes the Home tab"


def test_manifest_points_every_url_at_the_service_and_asks_for_the_scopes_in_use() -> None:
    """All request URLs are the service's /slack/events; the redirect URL is its OAuth route; scopes match OAuth's."""
    manifest = build_manifest(BASE + "/", slash_command="/draft")
    events_url = BASE + SLACK_EVENTS_PATH
    assert manifest["settings"]["event_subscriptions"]["request_url"] == events_url
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": events_url}
    assert [c["url"] for c in manifest["features"]["slash_commands"]] == [events_url]
    assert manifest["oauth_config"]["redirect_urls"] == [BASE + REDIRECT_URI_PATH]
    assert manifest["oauth_config"]["scopes"]["bot"] == list(OAUTH_SCOPES)
    assert manifest["oauth_config"]["scopes"]["user"] == list(USER_SCOPES), "what /slack/connect asks a user for"
    assert "reactions:write" in OAUTH_SCOPES, "the mention's progress reaction needs it"
    # Each message event needs its history scope; users.info's tz needs users:read.
    needed = {"channels:history", "groups:history", "im:history", "mpim:history", "users:read"}
    assert needed <= set(OAUTH_SCOPES)
    user_events = manifest["settings"]["event_subscriptions"]["user_events"]
    assert {"im:history", "mpim:history"} <= set(USER_SCOPES)
    assert user_events == ["message.im", "message.mpim"]
    assert INSTALL_PATH == "/slack/install"


def test_manifest_command_prints_json_and_refuses_a_non_https_url() -> None:
    """`slack-backend manifest --url https://HOST` prints the manifest as JSON; an http URL exits 2 with a reason."""
    done = run_cli("manifest", "--url", BASE, env={"SLACK_SLASH_COMMAND": "/reply"})
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == build_manifest(BASE, slash_command="/reply")
    refused = run_cli("manifest", "--url", "http://drafts.example.com", env={})
    assert refused.returncode == 2
    assert "https" in refused.stderr


async def test_card_buttons_and_modals_are_served_through_interactivity() -> None:
    """With its database the app serves every card button and submitted modal; Slack sends them to the
    interactivity URL, and the manifest asks users for chat:write (Send as me)."""
    from slack_backend.slack import card
    from slack_backend.store import create_engine

    settings = load_settings({"SLACK_SIGNING_SECRET": "s"})
    engine = create_engine("sqlite+aiosqlite://")
    try:
        app = build_bolt_app(settings, ai_responses_queue(Redis(), settings), signing_secret="s", engine=engine)
    finally:
        await engine.dispose()
    found: dict[str, set[str]] = defaultdict(set)
    for listener in app._async_listeners:
        for matcher in listener.matchers:
            inner = matcher.func.__closure__[0].cell_contents  # type: ignore[attr-defined]
            found[inner.__qualname__.split(".")[0]].update(str(c.cell_contents) for c in inner.__closure__ or [])
    assert set(card.CARD_ACTIONS) <= found["action"]
    assert {card.EDIT_VIEW, card.REFINE_VIEW} <= found["view_submission"]
    manifest = build_manifest(BASE, slash_command="/draft")
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert "chat:write" in manifest["oauth_config"]["scopes"]["user"]
