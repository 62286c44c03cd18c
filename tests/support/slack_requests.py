"""Slack-shaped request bodies (shortcut, slash command, app_mention), signed the way Slack signs them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from slack_backend.slack.signing import sign_request
from tests.fakes.slack_server import FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test"
TEAM = "T0FAKE"
USER = "U0USER1"
CHANNEL = "C0CHAN1"
# A group DM: the one kind of conversation besides DMs whose threads Slack lets a bot token read.
GROUP_DM = "G0GROUP1"
TS = "1700000000.000100"
THREAD_TS = "1699999999.000200"
TRIGGER_ID = "944799105734.773906753841.38b5894552bdd4a780554ee59d1f3638"
EVENT_ID = "Ev0PV52K21"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"


def form(fields: Mapping[str, str]) -> tuple[bytes, str]:
    return urlencode(fields).encode(), "application/x-www-form-urlencoded"


def shortcut_body(fake: FakeSlack, *, text: str = "Can you send me the Q3 numbers?") -> tuple[bytes, str]:
    payload = {
        "type": "message_action",
        "callback_id": "draft_reply",
        "trigger_id": TRIGGER_ID,
        "response_url": fake.response_url("shortcut1", replaceable=False),
        "action_ts": "1700000001.000000",
        "team": {"id": TEAM, "domain": "fake"},
        "user": {"id": USER, "username": "ana", "team_id": TEAM},
        "channel": {"id": CHANNEL, "name": "general"},
        "message_ts": TS,
        "message": {"type": "message", "user": "U0OTHER1", "text": text, "ts": TS, "thread_ts": THREAD_TS},
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return form({"payload": json.dumps(payload)})


def command_body(
    fake: FakeSlack, *, text: str = "Can you review my PR today?", trigger_id: str = TRIGGER_ID
) -> tuple[bytes, str]:
    return form(
        {
            "command": "/draft",
            "text": text,
            "team_id": TEAM,
            "team_domain": "fake",
            "channel_id": CHANNEL,
            "channel_name": "general",
            "user_id": USER,
            "user_name": "ana",
            "response_url": fake.response_url("command1"),
            "trigger_id": trigger_id,
            "api_app_id": "A0APP1",
        }
    )


def mention_body(*, text: str = "<@U0FAKEBOT> how should I answer this?", **event: str) -> tuple[bytes, str]:
    body = {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP1",
        "type": "event_callback",
        "event_id": EVENT_ID,
        "event_time": 1700000000,
        "event": {
            "type": "app_mention",
            "user": USER,
            "text": text,
            "ts": TS,
            "thread_ts": THREAD_TS,
            "channel": CHANNEL,
            "event_ts": TS,
            **event,
        },
    }
    return json.dumps(body).encode(), "application/json"


async def post_signed(
    client: httpx.AsyncClient,
    body_and_type: tuple[bytes, str],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> httpx.Response:
    body, content_type = body_and_type
    signed = {**sign_request(secret, body, timestamp), "Content-Type": content_type, **(headers or {})}
    return await client.post("/slack/events", content=body, headers=signed, extensions=extensions)
