"""Slack-shaped bodies for App Home and watched conversations: app_home_opened, message events, Home block_actions."""

from __future__ import annotations

import json
from typing import Any

from tests.support.slack_requests import CHANNEL, TEAM, USER, form

OTHER = "U0OTHER1"
BOT_USER = "U0FAKEBOT"


def event_body(event: dict[str, Any], *, event_id: str) -> tuple[bytes, str]:
    """An Events API callback carrying `event`, as Slack posts it."""
    body = {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}],
        "event": event,
    }
    return json.dumps(body).encode(), "application/json"


def home_opened_body(*, user: str = USER, event_id: str = "EvHOME001", tab: str = "home") -> tuple[bytes, str]:
    """app_home_opened: the user opened the app's Home tab."""
    event = {"type": "app_home_opened", "user": user, "channel": "D0APPDM1", "tab": tab, "event_ts": "1700000000.1"}
    return event_body(event, event_id=event_id)


def message_body(
    text: str,
    *,
    event_id: str,
    ts: str,
    user: str = OTHER,
    channel: str = CHANNEL,
    channel_type: str = "channel",
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    **extra: Any,
) -> tuple[bytes, str]:
    """A message event (message.channels / .groups / .im / .mpim) as Slack sends it."""
    event: dict[str, Any] = {
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": channel_type,
        **extra,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if parent_user_id is not None:
        event["parent_user_id"] = parent_user_id
    return event_body(event, event_id=event_id)


def home_action_body(action: dict[str, Any], *, user: str = USER, block_id: str = "b1") -> tuple[bytes, str]:
    """block_actions from a control of the Home tab (container type "view", no response_url)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "ana", "name": "ana", "team_id": TEAM},
        "api_app_id": "A0APP1",
        "token": "legacy",
        "container": {"type": "view", "view_id": "V00000001"},
        "trigger_id": "1111.2222.home",
        "team": {"id": TEAM, "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": {"id": "V00000001", "type": "home", "blocks": [], "state": {"values": {}}},
        "actions": [{"block_id": block_id, "action_ts": "1700000002.000000", **action}],
    }
    return form({"payload": json.dumps(payload)})


def select_action(action_id: str, value: str) -> dict[str, Any]:
    """A static_select's choice."""
    return {"type": "static_select", "action_id": action_id, "selected_option": {"value": value}}


def text_action(action_id: str, value: str) -> dict[str, Any]:
    """A dispatch-action plain_text_input's Enter."""
    return {"type": "plain_text_input", "action_id": action_id, "value": value}


def button_action(action_id: str, value: str) -> dict[str, Any]:
    """A button click."""
    return {"type": "button", "action_id": action_id, "value": value}


def checkboxes_action(action_id: str, values: list[str]) -> dict[str, Any]:
    """Checkboxes, with the options now selected."""
    return {
        "type": "checkboxes",
        "action_id": action_id,
        "selected_options": [{"value": v, "text": {"type": "plain_text", "text": v}} for v in values],
    }
