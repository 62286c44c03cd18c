"""Slack-shaped interaction payloads for the suggestion card: a button click (block_actions) and a modal's
submission (view_submission), as form bodies to sign with `post_signed`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fakes.slack_server import FakeSlack
from tests.support.slack_requests import CHANNEL, TEAM, TS, USER, form


@dataclass(frozen=True, slots=True)
class Click:
    """One click's body and the response_url Slack gave it (its id names it in `FakeSlack.response_posts`)."""

    body: tuple[bytes, str]
    response_id: str
    response_url: str
    trigger_id: str


def click(fake: FakeSlack, action_id: str, suggestion_id: str, *, user: str = USER) -> Click:
    """A block_actions payload for a button of an ephemeral card, with a fresh trigger_id and response_url."""
    response_id, url = fake.ui.click_response_url()
    trigger = fake.ui.trigger_id()
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "fake"},
        "user": {"id": user, "username": "someone", "team_id": TEAM},
        "api_app_id": "A0APP1",
        "token": "legacy",
        "container": {"type": "message", "message_ts": TS, "channel_id": CHANNEL, "is_ephemeral": True},
        "trigger_id": trigger,
        "channel": {"id": CHANNEL, "name": "general"},
        "response_url": url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "card_actions",
                "value": suggestion_id,
                "text": {"type": "plain_text", "text": action_id},
                "action_ts": "1700000002.000000",
            }
        ],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return Click(form({"payload": json.dumps(payload)}), response_id, url, trigger)


def submit(fake: FakeSlack, view: dict[str, Any], values: dict[str, Any], *, user: str = USER) -> tuple[bytes, str]:
    """A view_submission of `view` (as the fake opened it) with the inputs' `values` (state.values)."""
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "fake"},
        "user": {"id": user, "username": "someone", "team_id": TEAM},
        "api_app_id": "A0APP1",
        "token": "legacy",
        "trigger_id": fake.ui.trigger_id(),
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return form({"payload": json.dumps(payload)})


def edit_values(*parts: str) -> dict[str, Any]:
    """The Edit modal's state with its inputs holding `parts`."""
    return {f"edit_{i}": {"text": {"type": "plain_text_input", "value": part}} for i, part in enumerate(parts)}


def refine_values(*, preset: str | None = None, language: str = "", words: str = "") -> dict[str, Any]:
    """The Refine modal's state: a chosen preset (or none), the language box and the free words."""
    chosen = {"value": preset, "text": {"type": "plain_text", "text": preset}} if preset else None
    return {
        "preset": {"preset": {"type": "radio_buttons", "selected_option": chosen}},
        "language": {"language": {"type": "plain_text_input", "value": language or None}},
        "instruction": {"instruction": {"type": "plain_text_input", "value": words or None}},
    }
