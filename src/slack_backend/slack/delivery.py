"""Show the user their draft, progress and failures as ephemeral messages, exactly once per job.

Nothing is left behind: a slash command's ack ("Drafting a reply...") is the progress note and the draft replaces
it; a message shortcut gets no note, since its response_url cannot replace one (its "original" is the message
the shortcut was used on, someone else's, so every post says `replace_original: false`); a mention shows an
hourglass reaction on the user's message while it is drafted, removed once the draft or the failure note is posted.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.logging import get_logger
from slack_backend.queue.errors import RetryAfter, UnrecoverableError
from slack_backend.slack.errors import (
    ResponseUrlError,
    SlackRejectedError,
    classify_slack_error,
    rate_limited,
    rejected,
    retry_after_s,
)
from slack_backend.slack.messages import BlockDict, DraftMessage, draft_messages, failure_text
from slack_backend.slack.response_urls import response_url_problem

log = get_logger(__name__)

# Slack lets a response_url be used 5 times within 30 minutes of the interaction.
RESPONSE_URL_MAX_USES = 5
# How long delivery may wait in place for Slack's 429s before handing the wait to the engine as RetryAfter.
DEFAULT_MAX_RATE_LIMIT_WAIT_S = 30.0
DEFAULT_HTTP_TIMEOUT_S = 10.0
# Uses are counted per response_url in this process; the oldest counts are forgotten past this many URLs.
_MAX_TRACKED_URLS = 4_096
# Errors meaning the response_url can no longer be used: the draft goes through chat.postEphemeral instead.
_GONE_ERRORS = frozenset({"used_url", "expired_url", "invalid_url"})

# Trigger kinds as jobs' TriggerKind spells them (slack/ does not import jobs/; tests/test_layers.py checks).
THREAD_TRIGGER = "thread"
SLASH_COMMAND_TRIGGER = "slash_command"
MESSAGE_ACTION_TRIGGER = "message_action"
# Requests made by a message of the user's own that mentions or addresses the app: it may carry a reaction.
_REACTION_TRIGGERS = frozenset({"mention", "dm"})
# Shown on the user's message while its draft is written (needs the reactions:write scope).
PROGRESS_REACTION = "hourglass_flowing_sand"

Via = Literal["response_url", "ephemeral"]
ClientFactory = Callable[[str], AsyncWebClient]
_T = TypeVar("_T")


class Recipient(Protocol):
    """Who asked and where: the fields of a job's data that delivery reads (jobs' AIResponseJobData has them).

    A protocol, so slack/ (Slack out) needs nothing from jobs/: the arrows between the layers point one way.
    """

    @property
    def workspace_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def channel_id(self) -> str: ...
    @property
    def trigger(self) -> str: ...
    @property
    def message_ts(self) -> str | None: ...
    @property
    def thread_ts(self) -> str | None: ...
    @property
    def response_url(self) -> str | None: ...
    @property
    def request_id(self) -> str | None: ...


class DeliveryLedger(Protocol):
    """Remembers which jobs' drafts were delivered, so a rerun (after a stall or crash) never posts twice."""

    async def delivered(self, job_id: str) -> bool:
        """Whether the draft of `job_id` was already delivered."""
        ...

    async def mark_delivered(self, job_id: str) -> None:
        """Record that the draft of `job_id` was delivered."""
        ...


class InMemoryDeliveryLedger:
    """A DeliveryLedger in process memory, for tests and single-process experiments (lost on restart)."""

    def __init__(self) -> None:
        self._delivered: set[str] = set()

    async def delivered(self, job_id: str) -> bool:
        """Whether `mark_delivered(job_id)` was called on this ledger."""
        return job_id in self._delivered

    async def mark_delivered(self, job_id: str) -> None:
        """Remember `job_id` as delivered."""
        self._delivered.add(job_id)


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """How a draft reached the user: the path of its first part, how many messages, or skipped as already done."""

    via: Via
    parts: int
    skipped: bool = False


class _ResponseUrlGone(Exception):  # noqa: N818 - internal signal, never leaves this module
    """The response_url is used up or expired: fall back to chat.postEphemeral."""

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(f"response_url is no longer usable ({error})")


class _WaitBudget:
    """Honours Slack's Retry-After in place, up to a total wait; past it the RetryAfter goes to the engine."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0

    async def run(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        while True:
            try:
                return await attempt()
            except RetryAfter as limited:
                if self.waited_s + limited.delay_s > self.max_wait_s:
                    raise
                log.info("slack.rate_limited_waiting", delay_s=limited.delay_s, waited_s=self.waited_s)
                await asyncio.sleep(limited.delay_s)
                self.waited_s += limited.delay_s


class SlackDelivery:
    """Posts drafts, progress and failure notes to the asking user, by response_url or chat.postEphemeral.

    Bot tokens are passed to each call and handed to `client_factory`; they are never kept or logged.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        ledger: DeliveryLedger,
        *,
        session: aiohttp.ClientSession | None = None,
        http_timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
        max_rate_limit_wait_s: float = DEFAULT_MAX_RATE_LIMIT_WAIT_S,
        allow_loopback_response_url: bool = False,
    ) -> None:
        """Args:
        client_factory: builds an AsyncWebClient for a bot token (called per use).
        ledger: where delivered job ids are recorded.
        session: the aiohttp session for response_url POSTs, left open (the caller owns it); without one, a
            short-lived session is opened and closed per POST.
        http_timeout_s: timeout of each response_url POST.
        max_rate_limit_wait_s: total Slack 429 wait honoured in place per delivery.
        allow_loopback_response_url: also post to loopback response_urls (only when SLACK_API_URL is loopback:
            tests and the offline demo); any other URL off Slack's hook hosts is never fetched.
        """
        self._client_factory = client_factory
        self._ledger = ledger
        self._session = session
        self._http_timeout_s = http_timeout_s
        self._max_rate_limit_wait_s = max_rate_limit_wait_s
        self._allow_loopback = allow_loopback_response_url
        self._url_uses: OrderedDict[str, int] = OrderedDict()
        # Ids of the job data objects (one per job run) that already showed progress; dropped when the data is freed.
        self._progressed: set[int] = set()

    async def progress(self, data: Recipient, token: str, stage: str) -> None:
        """Show the user the draft is on its way, at most once per job run (one fetched `data` object).

        Only in a form the draft later takes away: an hourglass reaction on the user's own message. A slash
        command's ack already says "Drafting", and a shortcut has no message that could be replaced, so both get
        nothing here. Best effort: failures are logged and ignored, and Slack's 429s are not waited for.
        """
        ts = _reaction_ts(data)
        if ts is None or not token or not self._first_progress(data):
            return
        try:
            await self._client_factory(token).reactions_add(
                channel=data.channel_id, timestamp=ts, name=PROGRESS_REACTION
            )
        except Exception as exc:  # progress is a courtesy: nothing here may fail the job
            if _slack_error(exc) != "already_reacted":  # a rerun's reaction is already there
                log.warning("slack.progress_failed", **_ids(data), stage=stage, error=_describe(exc))

    async def delivered(self, job_id: str) -> bool:
        """Whether the ledger holds `job_id` as delivered: a draft's run reads it while its model call is in flight
        (jobs/while_calling.py) and passes the answer to `deliver` as `delivered_before`."""
        return await self._ledger.delivered(job_id)

    async def deliver(
        self,
        job_id: str,
        data: Recipient,
        token: str,
        draft_text: str,
        *,
        offline: bool,
        card: DraftMessage | None = None,
        delivered_before: bool | None = None,
    ) -> DeliveryReceipt:
        """Post the draft to the user as one or more ephemeral messages, unless this job already delivered it.

        Uses the response_url while it has uses left and is Slack's (the first part of a slash command's draft
        replacing its "Drafting" ack; nothing else replaces), then chat.postEphemeral. With `card` (slack/card.py),
        that one message is posted instead of the plain draft. The ledger is marked right
        after the last part posts; then a mention's progress reaction is taken away. `delivered_before`: what
        `delivered(job_id)` answered earlier in this run, with no post in between (None: it is read here).

        Raises:
            RetryAfter: Slack is still rate limiting after `max_rate_limit_wait_s` of waiting in place.
            UnrecoverableError: Slack refused for good (for example `SlackRejectedError` for channel_not_found).
            Exception: a transient error (5xx, connection, timeout) for the engine to retry.
        """
        if delivered_before is None:
            delivered_before = await self._ledger.delivered(job_id)
        if delivered_before:
            log.info("slack.delivery_skipped", job_id=job_id, reason="already delivered")
            return DeliveryReceipt(via="response_url" if data.response_url else "ephemeral", parts=0, skipped=True)
        messages = [card] if card is not None else draft_messages(draft_text, offline=offline)
        budget = _WaitBudget(self._max_rate_limit_wait_s)
        client: AsyncWebClient | None = None
        vias: list[Via] = []
        for index, message in enumerate(messages):
            url = self._usable_url(data)
            if url is not None:
                # Only a slash command's first part replaces: its original is our own "Drafting" ack.
                replace = index == 0 and data.trigger == SLASH_COMMAND_TRIGGER
                payload = _response_payload(message.text, message.blocks, replace_original=replace)
                try:
                    await budget.run(partial(self._post_response_url, url, payload))
                    vias.append("response_url")
                    continue
                except _ResponseUrlGone as gone:
                    self._mark_gone(url, gone.error)
            client = client or self._client_factory(token)
            await budget.run(partial(self._post_ephemeral, client, data, text=message.text, blocks=message.blocks))
            vias.append("ephemeral")
        await self._ledger.mark_delivered(job_id)
        log.info("slack.delivered", job_id=job_id, **_ids(data), parts=len(messages), via=",".join(vias))
        await self._clear_progress(data, token)
        return DeliveryReceipt(via=vias[0], parts=len(messages))

    async def replace_card(
        self, job_id: str, data: Recipient, token: str, message: DraftMessage, *, delivered_before: bool | None = None
    ) -> DeliveryReceipt:
        """Replace the card the user clicked (`data.response_url` is the click's) with `message`, once per job.

        When that response_url is used up or expired, the message is posted as a new ephemeral message instead.
        Raises as `deliver` does; `delivered_before` as there.
        """
        if delivered_before is None:
            delivered_before = await self._ledger.delivered(job_id)
        if delivered_before:
            log.info("slack.delivery_skipped", job_id=job_id, reason="already delivered")
            return DeliveryReceipt(via="response_url", parts=0, skipped=True)
        budget = _WaitBudget(self._max_rate_limit_wait_s)
        via: Via = "ephemeral"
        url = self._usable_url(data)
        payload = {**_response_payload(message.text, message.blocks, replace_original=True)}
        try:
            if url is None:
                raise _ResponseUrlGone("no_url")
            await budget.run(partial(self._post_response_url, url, payload))
            via = "response_url"
        except _ResponseUrlGone as gone:
            if url is not None:
                self._mark_gone(url, gone.error)
            client = self._client_factory(token)
            await budget.run(partial(self._post_ephemeral, client, data, text=message.text, blocks=message.blocks))
        await self._ledger.mark_delivered(job_id)
        log.info("slack.card_replaced", job_id=job_id, **_ids(data), via=via)
        return DeliveryReceipt(via=via, parts=1)

    async def respond(self, response_url: str, payload: Mapping[str, Any]) -> None:
        """One post to a response_url the edge was given (replace or delete a card, or a note); raises on refusal.

        Raises:
            SlackRejectedError: the URL is not Slack's, or is used up or expired (`error` says which).
            RetryAfter: Slack's 429.
        """
        problem = response_url_problem(response_url, allow_loopback=self._allow_loopback)
        if problem is not None:
            raise SlackRejectedError(f"response_url refused: {problem}", error="invalid_url")
        if self._uses_left(response_url) <= 0:
            raise SlackRejectedError("response_url is used up", error="used_url")
        try:
            await self._post_response_url(response_url, payload)
        except _ResponseUrlGone as gone:
            self._mark_gone(response_url, gone.error)
            raise SlackRejectedError(f"response_url is no longer usable ({gone.error})", error=gone.error) from gone

    async def tell_failure(self, data: Recipient, token: str, reason: str) -> bool:
        """Tell the user in plain words that their draft failed; True when the message was posted.

        Never raises (except cancellation): a user we cannot reach is logged, not retried.
        """
        text = failure_text(reason)
        await self._clear_progress(data, token)
        url = self._usable_url(data)
        if url is not None:
            replace = data.trigger == SLASH_COMMAND_TRIGGER
            try:
                await self._post_response_url(
                    url, {"response_type": "ephemeral", "replace_original": replace, "text": text}
                )
                return True
            except _ResponseUrlGone as gone:
                self._mark_gone(url, gone.error)
            except Exception as exc:  # fall through to chat.postEphemeral
                log.warning("slack.failure_notice_failed", **_ids(data), via="response_url", error=_describe(exc))
        try:
            await self._post_ephemeral(self._client_factory(token), data, text=text)
        except Exception as exc:  # the job has failed already; not reaching the user must not raise on top
            log.warning("slack.failure_notice_failed", **_ids(data), via="ephemeral", error=_describe(exc))
            return False
        return True

    async def _clear_progress(self, data: Recipient, token: str) -> None:
        """Take the progress reaction away (best effort; a run that never added one gets no_reaction)."""
        ts = _reaction_ts(data)
        if ts is None or not token:
            return
        try:
            await self._client_factory(token).reactions_remove(
                channel=data.channel_id, timestamp=ts, name=PROGRESS_REACTION
            )
        except Exception as exc:  # the draft is out; a reaction left over is untidy, not a failure
            if _slack_error(exc) != "no_reaction":
                log.warning("slack.progress_clear_failed", **_ids(data), error=_describe(exc))

    def _usable_url(self, data: Recipient) -> str | None:
        """The job's response_url when it may be posted to and has uses left; else None (chat.postEphemeral)."""
        url = data.response_url
        if url is None or self._uses_left(url) <= 0:
            return None
        problem = response_url_problem(url, allow_loopback=self._allow_loopback)
        if problem is not None:
            log.warning("slack.response_url_refused", **_ids(data), reason=problem)
            return None
        return url

    def _first_progress(self, data: Recipient) -> bool:
        key = id(data)
        if key in self._progressed:
            return False
        self._progressed.add(key)
        # The id is only unique while the object lives; forget it when the data is freed so ids can be reused.
        weakref.finalize(data, self._progressed.discard, key)
        return True

    def _uses_left(self, url: str) -> int:
        return RESPONSE_URL_MAX_USES - self._url_uses.get(url, 0)

    def _count_use(self, url: str) -> None:
        self._url_uses[url] = self._url_uses.get(url, 0) + 1
        self._url_uses.move_to_end(url)
        while len(self._url_uses) > _MAX_TRACKED_URLS:
            self._url_uses.popitem(last=False)

    def _mark_gone(self, url: str, error: str) -> None:
        log.info("slack.response_url_gone", error=error)
        self._url_uses[url] = RESPONSE_URL_MAX_USES
        self._url_uses.move_to_end(url)

    async def _post_response_url(self, url: str, payload: Mapping[str, Any]) -> None:
        timeout = aiohttp.ClientTimeout(total=self._http_timeout_s)
        # No redirects: the URL checked against Slack's hook hosts is the only one posted to.
        async with (
            self._http_session() as session,
            session.request("POST", url, json=dict(payload), timeout=timeout, allow_redirects=False) as response,
        ):
            status = response.status
            body = await response.read()
            headers = response.headers
        error = _response_error(status, body)
        if 200 <= status < 300 and not error:
            self._count_use(url)
            return
        if error in _GONE_ERRORS or status in (404, 410):
            raise _ResponseUrlGone(error or f"http_{status}")
        if status == 429 or error == "ratelimited":
            raise rate_limited(retry_after_s(headers), what="Slack's response_url")
        if status >= 500:
            raise ResponseUrlError(status, error)
        refused = rejected(error, status_code=status)
        if refused is not None:
            raise refused
        raise SlackRejectedError(
            f"Slack's response_url refused the message (HTTP {status}{', ' + error if error else ''})",
            error=error or f"http_{status}",
            status_code=status,
        )

    async def _post_ephemeral(
        self, client: AsyncWebClient, data: Recipient, *, text: str, blocks: list[BlockDict] | None = None
    ) -> None:
        try:
            await client.chat_postEphemeral(
                channel=data.channel_id, user=data.user_id, text=text, blocks=blocks, thread_ts=_thread_ts(data)
            )
        except SlackApiError as exc:
            classified = classify_slack_error(exc)
            if classified is exc:
                raise
            raise classified from exc

    @asynccontextmanager
    async def _http_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self._session is not None:
            yield self._session
            return
        async with aiohttp.ClientSession() as session:
            yield session


def _response_payload(text: str, blocks: list[BlockDict], *, replace_original: bool) -> dict[str, Any]:
    # replace_original false is explicit: for some interactions Slack's default is to replace.
    return {"response_type": "ephemeral", "replace_original": replace_original, "text": text, "blocks": blocks}


def _response_error(status: int, body: bytes) -> str:
    # Slack answers a response_url with JSON ({"ok": false, "error": ...}) or plain "ok"; both are accepted.
    try:
        parsed = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return "" if 200 <= status < 300 else body.decode("utf-8", "replace").strip()[:64]
    if isinstance(parsed, dict) and parsed.get("ok") is False:
        error = parsed.get("error")
        return error if isinstance(error, str) and error else "unknown_error"
    return ""


def _reaction_ts(data: Recipient) -> str | None:
    """The user's message that carries the progress reaction, or None when this request shows none."""
    # Only the user's own message to the app: a reaction on a shortcut's (or a watched) message would tell the
    # channel that someone asked for a draft; a command has no message at all.
    if data.trigger not in _REACTION_TRIGGERS:
        return None
    return data.message_ts


def _slack_error(exc: BaseException) -> str | None:
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, SlackApiError):
            error = candidate.response.get("error") if hasattr(candidate.response, "get") else None
            return error if isinstance(error, str) else None
    return None


def _thread_ts(data: Recipient) -> str | None:
    if data.thread_ts:
        return data.thread_ts
    # A request made inside a thread whose parent is the trigger message itself: show the draft in that thread.
    if data.trigger == THREAD_TRIGGER:
        return data.message_ts
    return None


def _ids(data: Recipient) -> dict[str, str | None]:
    return {
        "workspace_id": data.workspace_id,
        "channel_id": data.channel_id,
        "user_id": data.user_id,
        "request_id": data.request_id,
    }


def _describe(exc: BaseException) -> str:
    # Only words we control: raw exception texts can hold a response_url, which lets anyone post to the user.
    if isinstance(exc, SlackApiError):
        response = exc.response
        error = response.get("error") if hasattr(response, "get") else None
        return f"SlackApiError {error or 'unknown'} (HTTP {getattr(response, 'status_code', '?')})"
    if isinstance(exc, ResponseUrlError | RetryAfter | UnrecoverableError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
