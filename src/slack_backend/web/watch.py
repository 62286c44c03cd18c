"""Watched conversations: `/draft watch` and `/draft unwatch`, and the message events that queue passive suggestions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncBoltContext, AsyncBoltRequest
from sqlalchemy.exc import SQLAlchemyError

from slack_backend.config import Settings
from slack_backend.jobs.queues import queue_ai_response
from slack_backend.jobs.types import MAX_TRIGGER_TEXT_CHARS, TriggerKind
from slack_backend.logging import get_logger
from slack_backend.queue import InvalidJobDataError, NotReplicatedError, Queue
from slack_backend.store import WatchLimitError, thread_key
from slack_backend.store.db import utc_now
from slack_backend.web._errors import QueueUnavailableError
from slack_backend.web.app_home import UserStores, installation_team, remember_time_zone

log = get_logger(__name__)

WATCH_WORDS = ("watch", "unwatch")
# Same bound as the direct requests' enqueue (ingress.ENQUEUE_DEADLINE_S): Slack gives up on an answer after 3 s.
ENQUEUE_DEADLINE_S = 1.5
# Message subtypes that are still a person's words; every other subtype (joins, edits, bots...) is ignored.
_PLAIN_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})
# Conversations that are DMs (one-to-one and group): a message there is addressed to everyone in it.
_DM_TYPES = frozenset({"im", "mpim"})

WATCHING_TEXT = (
    "Watching this conversation: when someone mentions you, replies in your thread or writes to you here, "
    "you'll get a suggested reply only you can see. (I see a channel's messages only if I'm in it.) "
    "`{command} unwatch` stops it."
)
ALREADY_TEXT = "You already watch this conversation. `{command} unwatch` stops it."
UNWATCHED_TEXT = "Stopped watching this conversation."
NOT_WATCHED_TEXT = "You don't watch this conversation."
NO_DATABASE_TEXT = "Watching conversations needs the app's database, which this process does not have."
DATABASE_DOWN_TEXT = "I couldn't save that right now, please try again in a minute."


class Watching:
    """The watch command and the message listener; without a database (`stores` None) messages are only acked.

    In a conversation a user watches, a message by someone else that mentions them, replies in a thread they wrote
    in (or started), or writes to them in a DM queues a passive job for them: lower priority than any direct
    request, under the same limits. Never for their own or a bot's messages, never in their quiet hours, and at
    most one open suggestion per user per thread (until they answer there, or OPEN_SUGGESTION_TTL passes).
    """

    def __init__(
        self,
        settings: Settings,
        queue: Queue,
        stores: UserStores | None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._stores = stores
        self._clock = clock
        self._limit_chars = min(settings.max_trigger_text_chars, MAX_TRIGGER_TEXT_CHARS)

    async def command(self, word: str, command: dict[str, Any], context: AsyncBoltContext) -> str:
        """`/draft watch` or `/draft unwatch` in the conversation it is typed in; returns the ephemeral answer."""
        try:
            return await self._command(word, command, context)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("watch command failed: database unavailable", error=type(exc).__name__)
            return DATABASE_DOWN_TEXT

    async def _command(self, word: str, command: dict[str, Any], context: AsyncBoltContext) -> str:
        slash = self._settings.slack_slash_command
        user, channel, team = command.get("user_id"), command.get("channel_id"), installation_team(context)
        if self._stores is None:
            return NO_DATABASE_TEXT
        if not isinstance(user, str) or not isinstance(channel, str) or team is None:
            return "Slack did not say who and where you are; please try again."
        fields = {"team": team, "user": user, "channel": channel}
        if word == "unwatch":
            stopped = await self._stores.watches.unwatch(team, user, channel)
            log.info("conversation unwatched" if stopped else "unwatch: not watched", **fields)
            return UNWATCHED_TEXT if stopped else NOT_WATCHED_TEXT
        try:
            started = await self._stores.watches.watch(team, user, channel)
        except WatchLimitError as exc:
            return f"Not watched: {exc}. Unwatch one from the app's Home tab first."
        log.info("conversation watched" if started else "watch: already watched", **fields)
        await remember_time_zone(self._stores, context.client, team, user)
        return (WATCHING_TEXT if started else ALREADY_TEXT).format(command=slash)

    async def on_message(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, request: AsyncBoltRequest
    ) -> None:
        """A message in a conversation: queue a passive suggestion for each watcher it is for.

        Raises:
            QueueUnavailableError: Redis did not take a job; answered 503 so Slack delivers the event again (the
                same event id adds no second job).
        """
        author, channel, team = event.get("user"), event.get("channel"), installation_team(context)
        if self._stores is None or not isinstance(channel, str) or team is None:
            return
        if event.get("bot_id") or event.get("subtype") not in _PLAIN_SUBTYPES or not isinstance(author, str):
            log.debug("message ignored: from a bot or not a person's message", subtype=event.get("subtype"))
            return
        try:
            await self._route(body, event, context, request, team, channel, author)
        except (SQLAlchemyError, OSError) as exc:
            # Every message of every channel the app is in arrives here: answering 5xx while the database is away
            # would have Slack retry them all, and switch the app's events off (app_mention too) if it goes on.
            log.warning("message event dropped: database unavailable", error=type(exc).__name__, channel=channel)

    async def _route(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
        team: str,
        channel: str,
        author: str,
    ) -> None:
        if self._stores is None:
            return
        watchers = await self._stores.watches.watchers(team, channel)
        if not watchers:
            return
        ts, thread_ts = _str(event.get("ts")), _str(event.get("thread_ts"))
        if ts is None:
            return
        is_dm = event.get("channel_type") in _DM_TYPES
        key = thread_key(thread_ts, ts, is_dm=is_dm)
        if author in watchers:
            await self._note_own_message(team, author, channel, thread_ts, key)
        for watcher in watchers:
            if watcher == author:
                continue
            kind = await self._kind(team, watcher, channel, event, is_dm, ts, thread_ts)
            if kind is not None:
                await self._suggest(body, event, context, request, watcher, kind, key)

    async def _note_own_message(self, team: str, author: str, channel: str, thread_ts: str | None, key: str) -> None:
        """The watcher wrote here: the thread is theirs from now on, and their open suggestion there is answered."""
        if self._stores is None:
            return
        if thread_ts is not None:
            await self._stores.watches.note_thread(team, author, channel, thread_ts)
        await self._stores.watches.close_suggestion(team, author, channel, key)

    async def _kind(
        self,
        team: str,
        watcher: str,
        channel: str,
        event: dict[str, Any],
        is_dm: bool,
        ts: str,
        thread_ts: str | None,
    ) -> TriggerKind | None:
        if self._stores is None:
            return None
        if is_dm:
            return TriggerKind.WATCHED_DM
        if f"<@{watcher}>" in str(event.get("text") or "") or f"<@{watcher}|" in str(event.get("text") or ""):
            return TriggerKind.WATCHED_MENTION
        if thread_ts is not None and thread_ts != ts:
            if event.get("parent_user_id") == watcher:
                return TriggerKind.WATCHED_THREAD
            if await self._stores.watches.in_thread(team, watcher, channel, thread_ts):
                return TriggerKind.WATCHED_THREAD
        return None

    async def _suggest(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
        watcher: str,
        kind: TriggerKind,
        key: str,
    ) -> None:
        stores = self._stores
        team, channel = installation_team(context), str(event.get("channel"))
        if stores is None or team is None:
            return
        fields = {"team": team, "user": watcher, "trigger": kind.value}
        prefs = await stores.preferences.get(team, watcher)
        if prefs.in_quiet_hours(self._clock()):
            log.info("passive suggestion skipped: quiet hours", **fields)
            return
        if not await stores.watches.open_suggestion(team, watcher, channel, key):
            log.info("passive suggestion skipped: one is open in this thread", **fields)
            return
        text = str(event.get("text") or "")[: self._limit_chars]
        data = {
            "workspace_id": team,
            "enterprise_id": context.enterprise_id,
            "user_id": watcher,
            "channel_id": channel,
            "trigger": kind,
            "trigger_text": text,
            "message_ts": _str(event.get("ts")),
            "thread_ts": _str(event.get("thread_ts")),
            "request_id": _str(context.get("request_id")),
        }
        # One job per (event, watcher): Slack's re-delivery of the event adds nothing.
        job_id = f"{body.get('event_id') or event.get('ts')}:{watcher}"
        try:
            async with asyncio.timeout(ENQUEUE_DEADLINE_S):
                result = await queue_ai_response(
                    self._queue,
                    {k: v for k, v in data.items() if v is not None},
                    job_id=job_id,
                    max_output_tokens=self._settings.ai_max_tokens,
                )
        except InvalidJobDataError as exc:
            await stores.watches.close_suggestion(team, watcher, channel, key)
            log.warning("passive suggestion not queued: invalid", reason=str(exc), **fields)
            return
        except NotReplicatedError as exc:
            log.warning("passive suggestion queued without replica confirmation", error=str(exc), **fields)
            return
        except (RedisError, OSError, TimeoutError) as exc:
            await stores.watches.close_suggestion(team, watcher, channel, key)
            retry: list[str | None] = [*(request.headers.get("x-slack-retry-num") or []), None]
            log.error(
                "passive suggestion not queued: redis unavailable",
                error=type(exc).__name__,
                retry_num=retry[0],
                **fields,
            )
            raise QueueUnavailableError(type(exc).__name__) from exc
        log.info("passive suggestion queued", job_id=result.job_id, created=result.created, **fields)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
