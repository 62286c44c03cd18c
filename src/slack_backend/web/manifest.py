"""The Slack app manifest for this service: what Slack must send where, built from the constants the edge uses."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from slack_backend.slack.tokens import USER_SCOPES
from slack_backend.web.app import SLACK_EVENTS_PATH
from slack_backend.web.ingress import (
    DRAFT_REPLY_CALLBACK_ID,
    OAUTH_SCOPES,
    REDIRECT_URI_PATH,
    SUBSCRIBED_EVENTS,
)

USER_EVENTS = ("message.im", "message.mpim")

DEFAULT_APP_NAME = "Draft Reply"
_DESCRIPTION = "Drafts replies in your voice with Claude. Only you see a draft: copy it, change it, send it."


def manifest_problem(base_url: str) -> str | None:
    """Why `base_url` cannot be the app's public address (Slack sends requests only to https), or None."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        return "--url must be the service's public https address, like https://drafts.example.com"
    if parts.query or parts.fragment or parts.username:
        return "--url must be a plain https address (no query, fragment or user)"
    return None


def build_manifest(base_url: str, *, slash_command: str, app_name: str = DEFAULT_APP_NAME) -> dict[str, Any]:
    """The manifest (Slack's JSON form) for an app served at `base_url`.

    One request URL serves events, interactivity (the shortcut, the card's buttons and modals) and the slash
    command, as `/slack/events` does;
    the redirect URL is for OAuth installs into more workspaces (unused with a single SLACK_BOT_TOKEN).
    """
    root = base_url.rstrip("/")
    events_url = f"{root}{SLACK_EVENTS_PATH}"
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {"name": app_name, "description": _DESCRIPTION},
        "features": {
            # The Home tab holds each user's settings (web/app_home.py). No listener answers a DM to the app
            # itself (message.im serves watched DMs only): the Messages tab stays off, so nobody writes to it
            # and hears nothing back.
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": False,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": app_name, "always_online": False},
            "shortcuts": [
                {
                    "name": "Draft a reply",
                    "type": "message",
                    "callback_id": DRAFT_REPLY_CALLBACK_ID,
                    "description": "Draft a reply to this message; only you see it",
                }
            ],
            "slash_commands": [
                {
                    "command": slash_command,
                    "url": events_url,
                    "description": "Draft a reply to a message you paste",
                    "usage_hint": "[the message you got]",
                    "should_escape": False,
                }
            ],
        },
        "oauth_config": {
            "redirect_urls": [f"{root}{REDIRECT_URI_PATH}"],
            # User scopes: what /slack/connect asks each user for (reading as them; chat:write for Send as me).
            "scopes": {"bot": list(OAUTH_SCOPES), "user": list(USER_SCOPES)},
        },
        "settings": {
            # user_events: DMs between people reach the app only through the connected account of a user who
            # watches them (their im:history / mpim:history user scopes).
            "event_subscriptions": {
                "request_url": events_url,
                "bot_events": list(SUBSCRIBED_EVENTS),
                "user_events": list(USER_EVENTS),
            },
            "interactivity": {"is_enabled": True, "request_url": events_url},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }
