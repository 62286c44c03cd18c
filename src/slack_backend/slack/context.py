"""Read a Slack thread as bounded conversation context for a draft: the newest messages, oldest first."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.ai.types import ContextMessage
from slack_backend.slack.errors import classify_slack_error

# Slack suggests pages of at most 200 for conversations.replies (Marketplace-approved apps) ...
MARKETPLACE_PAGE_SIZE = 200
# ... and serves apps that are not approved at most 15 messages a call: asking for more only hides the truth.
NON_MARKETPLACE_PAGE_SIZE = 15
DEFAULT_PAGE_SIZE = NON_MARKETPLACE_PAGE_SIZE
# A runaway thread must not turn one job into hundreds of API calls: past this many pages, the newest read so far win.
MAX_PAGES = 25
TRUNCATION_MARK = "..."


@dataclass(frozen=True, slots=True)
class ThreadRead:
    """What one bounded thread read got: the messages kept, and whether the whole thread was read."""

    messages: tuple[ContextMessage, ...]
    complete: bool


# Called before each conversations.replies call: True to go ahead, False when the call may not be made in time
# (the caller's rate limiter and wait bound decide; the read then keeps what it has).
BeforeCall = Callable[[], Awaitable[bool]]


async def read_thread(
    client: AsyncWebClient,
    channel_id: str,
    thread_ts: str,
    *,
    max_messages: int = 30,
    max_chars: int = 12_000,
    exclude_ts: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> tuple[ContextMessage, ...]:
    """The thread's newest messages that fit `max_messages` and `max_chars` of text, oldest first.

    Bot messages are kept, under their bot user (or bot id). Messages with no text, and the one at `exclude_ts`
    (usually the trigger, sent to the model on its own), are left out. When even the newest message alone is
    longer than `max_chars`, its beginning is kept.

    Raises:
        The classified Slack error (`RetryAfter`, an `UnrecoverableError`, or the transient error itself).
    """
    read = await read_thread_bounded(
        client,
        channel_id,
        thread_ts,
        max_messages=max_messages,
        max_chars=max_chars,
        exclude_ts=exclude_ts,
        page_size=page_size,
    )
    return read.messages


async def read_thread_bounded(
    client: AsyncWebClient,
    channel_id: str,
    thread_ts: str,
    *,
    max_messages: int = 30,
    max_chars: int = 12_000,
    exclude_ts: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    before_call: BeforeCall | None = None,
) -> ThreadRead:
    """As `read_thread`, asking `before_call` before each page: when it says no, the pages read so far are kept
    (Slack serves a thread oldest first, so they hold its start) and the read is marked incomplete.

    Raises:
        `ThreadReadDeferredError` when `before_call` refuses the first page; else as `read_thread`.
    """
    if max_messages < 1 or max_chars < 1 or page_size < 1:
        raise ValueError("max_messages, max_chars and page_size must be at least 1")
    newest: deque[ContextMessage] = deque(maxlen=max_messages)
    cursor: str | None = None
    complete = False
    for page_number in range(MAX_PAGES):
        if before_call is not None and not await before_call():
            if page_number == 0:
                raise ThreadReadDeferredError()
            break
        page = await _replies_page(client, channel_id, thread_ts, cursor=cursor, limit=page_size)
        for raw in page.get("messages") or ():
            message = _context_message(raw) if isinstance(raw, Mapping) else None
            if message is not None and message.ts != exclude_ts:
                newest.append(message)
        metadata = page.get("response_metadata")
        cursor = metadata.get("next_cursor") if isinstance(metadata, Mapping) else None
        if not page.get("has_more") or not cursor:
            complete = True
            break
    return ThreadRead(_within_chars(list(newest), max_chars), complete)


class ThreadReadDeferredError(Exception):
    """The thread could not be read within the wait allowed (Slack's rate limit for conversations.replies)."""


async def _replies_page(
    client: AsyncWebClient, channel_id: str, thread_ts: str, *, cursor: str | None, limit: int
) -> Mapping[str, Any]:
    try:
        response = await client.conversations_replies(channel=channel_id, ts=thread_ts, cursor=cursor, limit=limit)
    except SlackApiError as exc:
        classified = classify_slack_error(exc)
        if classified is exc:
            raise
        raise classified from exc
    data = response.data
    return data if isinstance(data, Mapping) else {}


def _context_message(raw: Mapping[str, Any]) -> ContextMessage | None:
    text = raw.get("text")
    ts = raw.get("ts")
    if not isinstance(text, str) or not text.strip() or not isinstance(ts, str):
        return None
    author = raw.get("user") or raw.get("bot_id") or raw.get("username") or "unknown"
    return ContextMessage(user_id=str(author), text=text, ts=ts)


def _within_chars(messages: list[ContextMessage], max_chars: int) -> tuple[ContextMessage, ...]:
    kept: list[ContextMessage] = []
    used = 0
    for message in reversed(messages):
        if used + len(message.text) > max_chars:
            if not kept:
                head = message.text[: max(max_chars - len(TRUNCATION_MARK), 0)] + TRUNCATION_MARK
                kept.append(ContextMessage(user_id=message.user_id, text=head[:max_chars], ts=message.ts))
            break
        kept.append(message)
        used += len(message.text)
    kept.reverse()
    return tuple(kept)
