"""A draft's conversation: the thread read with a token Slack accepts there, who wrote what, and the requester's
time zone, all under Slack's shared rate limits and within a bounded wait (SLACK_CONTEXT_WAIT_S)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import structlog
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.ai import ContextMessage
from slack_backend.jobs.cost import CONTEXT_MAX_CHARS, CONTEXT_MAX_MESSAGES
from slack_backend.jobs.slack_limits import REPLIES, USERS_INFO, SlackCallLimiter
from slack_backend.jobs.types import AIResponseJobData, TriggerKind
from slack_backend.queue import RetryAfter, UnrecoverableError
from slack_backend.queue.connection import RedisClient
from slack_backend.slack import TokenSource
from slack_backend.slack.context import ThreadReadDeferredError, read_thread_bounded
from slack_backend.slack.errors import SlackRejectedError
from slack_backend.slack.people import Member, member

log = structlog.get_logger("slack_backend.jobs.context")

# The one line a draft carries when Slack's limits kept (part of) its thread from the model.
RATE_LIMITED_NOTE = "_Drafted without the thread: Slack lets this app read a thread only once a minute._"
PARTIAL_NOTE = "_Drafted from the start of the thread only: Slack lets this app read a thread only once a minute._"
SLOW_NOTE = "_Drafted without the thread: Slack did not answer in time._"
# Names and time zones change rarely; an hour's staleness costs nothing, a users.info call per message would.
MEMBER_CACHE_TTL_S = 3600
# A process also keeps what it read of that cache for a few minutes, at most this many people (then it starts
# afresh): a user's next draft within minutes waits for no round trip to Redis before its model call.
LOCAL_MEMBER_TTL_S = 300
LOCAL_MEMBER_MAX = 4096
_MEMBER_ID = re.compile(r"[UW][A-Z0-9]{2,30}")
# A thread read answered 429 again and again (Retry-After 0) still ends: after this many tries, without it.
MAX_READ_TRIES = 3
# At most this many distinct people are looked up for one draft (a thread holds at most CONTEXT_MAX_MESSAGES).
MAX_MEMBERS = 20


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a draft knows of its conversation.

    `refusal` is Slack's error code when a thread was there that no token we hold may read (the draft then offers
    the connect link); `note` a line telling the user the draft was written without (all of) the thread.
    """

    messages: tuple[ContextMessage, ...] = ()
    names: dict[str, str] = field(default_factory=dict)
    tz: str | None = None
    refusal: str | None = None
    note: str | None = None
    # Whether the requester has connected their own Slack account (a connect link would not help them).
    connected: bool = False


def bot_may_read_threads(channel_id: str) -> bool:
    """Slack lets bot tokens read threads only in DMs (D...) and group DMs (G..., shared with private channels)."""
    return channel_id.startswith(("D", "G"))


class ContextReader:
    """Reads a job's conversation. Tokens are looked up here, at use time, and never kept or logged."""

    def __init__(
        self,
        *,
        tokens: TokenSource | None,
        slack_api_url: str,
        limiter: SlackCallLimiter | None,
        redis: RedisClient | None = None,
        cache_prefix: str = "",
        wait_s: float = 10.0,
        page_size: int = 15,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`session`: the process's outbound session (slack/outbound.py), left open; None: one per call. `clock`:
        monotonic seconds, for what this process keeps of the member cache."""
        self._tokens = tokens
        self._session = session
        self._slack_api_url = slack_api_url
        self._limiter = limiter
        self._redis = redis
        self._cache_prefix = cache_prefix
        self._wait_s = wait_s
        self._page_size = page_size
        # (workspace, user) -> (until, monotonic s; the member), kept beside the Redis cache only.
        self._local: dict[tuple[str, str], tuple[float, Member]] = {}
        self._clock = clock

    async def read(self, data: AIResponseJobData, bot_token: str) -> Conversation:
        """The conversation of `data`, within the wait bound: what Slack would not give in time is left out."""
        deadline = time.monotonic() + self._wait_s
        user_token = await self._user_token(data) if bot_token else None
        messages: tuple[ContextMessage, ...] = ()
        refusal = note = None
        if data.context_messages:
            messages = tuple(ContextMessage(m.user_id, m.text, m.ts) for m in data.context_messages)
        elif data.thread_ts is not None and bot_token and data.trigger is not TriggerKind.SLASH_COMMAND:
            token = user_token or (bot_token if bot_may_read_threads(data.channel_id) else None)
            if token is None:
                refusal = "not_allowed_token_type"
            else:
                messages, refusal, note = await self._thread(data, data.thread_ts, token, deadline)
        names: dict[str, str] = {}
        tz: str | None = None
        if bot_token:
            people = await self._members(data, user_token or bot_token, _people_of(data, messages), deadline)
            names = {m.user_id: m.name for m in people.values() if m.name}
            requester = people.get(data.user_id)
            tz = requester.tz if requester is not None else None
        return Conversation(messages, names, tz, refusal, note, connected=user_token is not None)

    async def _user_token(self, data: AIResponseJobData) -> str | None:
        if self._tokens is None:
            return None
        try:
            return await self._tokens.user_token_for(data.workspace_id, data.user_id)
        except UnrecoverableError:
            return None  # e.g. the user's refresh token was revoked: read as if they had not connected

    async def _thread(
        self, data: AIResponseJobData, thread_ts: str, token: str, deadline: float
    ) -> tuple[tuple[ContextMessage, ...], str | None, str | None]:
        """The thread's messages, Slack's refusal code, and the note for the draft."""
        client = AsyncWebClient(token=token, base_url=self._slack_api_url, session=self._session)

        async def before_call() -> bool:
            if self._limiter is None:
                return True
            return await self._limiter.permit(data.workspace_id, REPLIES, max_wait_s=_left(deadline))

        for _ in range(MAX_READ_TRIES):
            try:
                async with asyncio.timeout(max(0.001, _left(deadline))):
                    read = await read_thread_bounded(
                        client,
                        data.channel_id,
                        thread_ts,
                        max_messages=CONTEXT_MAX_MESSAGES,
                        max_chars=CONTEXT_MAX_CHARS,
                        exclude_ts=data.message_ts,
                        page_size=self._page_size,
                        before_call=before_call,
                    )
            except ThreadReadDeferredError:
                log.info("thread read would wait past the bound: drafting without it", channel=data.channel_id)
                return (), None, RATE_LIMITED_NOTE
            except TimeoutError:
                log.warning("thread read slower than the bound: drafting without it", channel=data.channel_id)
                return (), None, SLOW_NOTE
            except RetryAfter as exc:
                # Slack refused despite the limiter: everyone waits its Retry-After; this job only within its bound.
                if self._limiter is not None:
                    await self._limiter.defer(data.workspace_id, REPLIES, exc.delay_s)
                if self._limiter is None or exc.delay_s > _left(deadline):
                    log.warning("thread read rate limited: drafting without it", channel=data.channel_id)
                    return (), None, RATE_LIMITED_NOTE
                continue  # the limiter now sleeps out the Retry-After (within the bound) before the next try
            except UnrecoverableError as exc:
                # Not ours to read (a channel thread with the bot token, a channel the user left): the draft is
                # written without it rather than failing the user's request. Transient errors still retry.
                log.warning("thread context unavailable", channel=data.channel_id, reason=str(exc))
                error = exc.error if isinstance(exc, SlackRejectedError) else None
                return (), error or "not_in_channel", None
            return read.messages, None, None if read.complete else PARTIAL_NOTE
        return (), None, RATE_LIMITED_NOTE

    async def _members(
        self, data: AIResponseJobData, token: str, user_ids: list[str], deadline: float
    ) -> dict[str, Member]:
        """Who these users are, from the cache or users.info; whoever cannot be looked up in time stays an id."""
        found = await self._cached(data.workspace_id, user_ids)
        client = AsyncWebClient(token=token, base_url=self._slack_api_url, session=self._session)
        for user_id in user_ids:
            if user_id in found:
                continue
            if self._limiter is not None and not await self._limiter.permit(
                data.workspace_id, USERS_INFO, max_wait_s=_left(deadline)
            ):
                break
            try:
                async with asyncio.timeout(max(0.001, _left(deadline))):
                    person = await member(client, user_id)
            except RetryAfter as exc:
                if self._limiter is not None:
                    await self._limiter.defer(data.workspace_id, USERS_INFO, exc.delay_s)
                break
            except Exception as exc:  # a name is a nicety: never a reason to fail or delay the draft
                log.info("member lookup failed", error=type(exc).__name__)
                break
            # Someone users.info does not know (a deleted user, another org's) is remembered too: not asked again.
            await self._remember(data.workspace_id, person or Member(user_id, ""))
            if person is not None:
                found[user_id] = person
        return found

    def _cache_key(self, workspace_id: str, user_id: str) -> str:
        return f"{self._cache_prefix}:slack-member:{workspace_id}:{user_id}"

    async def _cached(self, workspace_id: str, user_ids: Iterable[str]) -> dict[str, Member]:
        if self._redis is None:
            return {}
        now = self._clock()
        found: dict[str, Member] = {}
        ids: list[str] = []
        for user_id in user_ids:
            kept = self._local.get((workspace_id, user_id))
            if kept is not None and kept[0] > now:
                found[user_id] = kept[1]
            else:
                ids.append(user_id)
        if not ids:
            return found
        raw = await asyncio.gather(*(self._redis.get(self._cache_key(workspace_id, u)) for u in ids))
        for user_id, value in zip(ids, raw, strict=True):
            if value is None:
                continue
            try:
                fields = json.loads(value)
                found[user_id] = self._keep(workspace_id, Member(user_id, str(fields["name"]), fields.get("tz")))
            except (ValueError, KeyError, TypeError):
                continue  # a bad entry is looked up again
        return found

    async def _remember(self, workspace_id: str, person: Member) -> None:
        if self._redis is None:
            return
        value = json.dumps({"name": person.name, "tz": person.tz})
        await self._redis.set(self._cache_key(workspace_id, person.user_id), value, ex=MEMBER_CACHE_TTL_S)
        self._keep(workspace_id, person)

    def _keep(self, workspace_id: str, person: Member) -> Member:
        if len(self._local) >= LOCAL_MEMBER_MAX:
            self._local.clear()
        self._local[(workspace_id, person.user_id)] = (self._clock() + LOCAL_MEMBER_TTL_S, person)
        return person


def _people_of(data: AIResponseJobData, messages: tuple[ContextMessage, ...]) -> list[str]:
    """The requester first (their time zone dates the draft), the trigger's author, then the thread's authors."""
    ordered = [data.user_id]
    if data.trigger_user_id:
        ordered.append(data.trigger_user_id)
    ordered += [m.user_id for m in reversed(messages)]
    seen: list[str] = []
    for user_id in ordered:
        # Only plain member ids: they become part of cache keys, and bots (B...) have no users.info entry.
        if user_id not in seen and _MEMBER_ID.fullmatch(user_id):
            seen.append(user_id)
    return seen[:MAX_MEMBERS]


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def local_now(now: datetime, tz: str | None) -> datetime:
    """`now` in the time zone users.info gave for the requester; UTC when none (or one this host does not know)."""
    if tz:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return now.astimezone(ZoneInfo(tz))
    return now.astimezone(UTC)
