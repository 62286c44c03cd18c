"""Read a user's own recent messages in a conversation, with their token, as examples of how they write."""

from __future__ import annotations

from collections.abc import Mapping

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.slack.errors import classify_slack_error

# Slack serves apps outside the Marketplace conversations.history at 1 call a minute and 15 messages a call.
HISTORY_PAGE_SIZE = 15


async def read_own_messages(
    client: AsyncWebClient, channel_id: str, user_id: str, *, limit: int = HISTORY_PAGE_SIZE
) -> list[tuple[str, str]]:
    """The user's own plain messages among the conversation's newest `limit`, as (ts, text), newest first.

    One call: bot messages, joins and other subtypes, and messages with no text are left out.

    Raises:
        The classified Slack error (`RetryAfter`, an `UnrecoverableError`, or the transient error itself).
    """
    try:
        response = await client.conversations_history(channel=channel_id, limit=limit)
    except SlackApiError as exc:
        classified = classify_slack_error(exc)
        if classified is exc:
            raise
        raise classified from exc
    found: list[tuple[str, str]] = []
    for raw in response.get("messages") or ():
        if not isinstance(raw, Mapping) or raw.get("user") != user_id or raw.get("subtype") or raw.get("bot_id"):
            continue
        text, ts = raw.get("text"), raw.get("ts")
        if isinstance(text, str) and text.strip() and isinstance(ts, str):
            found.append((ts, text))
    return found
