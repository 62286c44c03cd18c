"""The suggestion card's buttons and modals (Bolt listeners): send as the user, edit & send, refine, regenerate,
copy, dismiss. Each is acknowledged within Slack's 3 s; posts happen after the ack or in a queued job."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.config import Settings
from slack_backend.jobs.card_jobs import ALREADY_SENT_TEXT, GONE_TEXT, NOT_YOURS_TEXT, queue_card_job
from slack_backend.logging import get_logger
from slack_backend.queue import InvalidJobDataError, NotReplicatedError, Queue
from slack_backend.slack.card import (
    COPY,
    DISMISS,
    EDIT,
    EDIT_BLOCK_PREFIX,
    EDIT_VIEW,
    INSTRUCTION_BLOCK,
    REFINE,
    REFINE_VIEW,
    REGENERATE,
    SEND,
    copy_view,
    edit_view,
    edited_text,
    note_message,
    read_metadata,
    refine_instruction,
    refine_view,
)
from slack_backend.slack.delivery import InMemoryDeliveryLedger, SlackDelivery
from slack_backend.slack.messages import escape_mrkdwn
from slack_backend.slack.response_urls import is_loopback_url
from slack_backend.slack.tokens import (
    InstallationStoreTokenSource,
    StaticTokenSource,
    TokenSource,
    token_rotator,
)
from slack_backend.store import (
    PreferenceStore,
    StyleExampleStore,
    Suggestion,
    SuggestionStore,
    WatchStore,
    thread_key,
)

log = get_logger(__name__)

SENT_TEXT = ":white_check_mark: Sent as you in <#{channel}>."
TRY_AGAIN_TEXT = "I couldn't do that right now. Please try again in a minute."
EMPTY_EDIT_TEXT = "The reply is empty: write something to send, or close this to keep the draft."
CONNECT_TEXT = (
    "To send drafts as yourself, connect your Slack account first: {url}/slack/connect "
    "(then press *Send as me* again). *Copy* works without it."
)
NO_CONNECT_TEXT = (
    "Sending as you needs your own Slack account connected, which this installation doesn't offer. "
    "Use *Copy* and paste it yourself instead."
)
# Slack's errors for a post as the user, in plain words.
_POST_REFUSALS = {
    "not_in_channel": "you're not a member of that conversation",
    "channel_not_found": "that conversation can't be found (or you can't post there)",
    "is_archived": "that conversation is archived",
    "missing_scope": "your connected account doesn't allow posting; connect it again to grant that",
    "invalid_auth": "your connected account's access was revoked; connect it again",
    "token_revoked": "your connected account's access was revoked; connect it again",
    "token_expired": "your connected account's access expired; connect it again",
    "restricted_action": "your workspace doesn't allow that post",
    "msg_too_long": "the reply is too long for one message",
}
# A listener must answer Slack within 3 s: the enqueue and views.open get this long.
ACTION_DEADLINE_S = 1.5


class CardActions:
    """The listeners; suggestions and users' tokens are read from the database at click time.

    `slack_session` (Web API calls and response_url posts) is the web app's shared session, left open; without it
    each post or call opens and closes its own.
    """

    def __init__(
        self,
        settings: Settings,
        queue: Queue,
        engine: AsyncEngine,
        tokens: TokenSource | None,
        *,
        slack_session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._suggestions = SuggestionStore(engine)
        # The user's side (web/app_home.py, web/watch.py): a sent edit becomes a style example (with consent), and a
        # sent or dismissed card frees its thread for the next passive suggestion.
        self._preferences = PreferenceStore(engine)
        self._style = StyleExampleStore(engine)
        self._watches = WatchStore(engine)
        self._tokens = tokens
        self._slack_session = slack_session
        self._delivery = SlackDelivery(
            self._web_client,
            InMemoryDeliveryLedger(),
            session=slack_session,
            allow_loopback_response_url=is_loopback_url(settings.slack_api_url),
        )

    def register(self, app: AsyncApp) -> None:
        """Add the listeners to the Bolt app (lazy ones run right after the ack)."""
        app.action(SEND)(ack=_ack, lazy=[self.send])
        app.action(EDIT)(self.open_edit)
        app.action(REFINE)(self.open_refine)
        app.action(REGENERATE)(self.regenerate)
        app.action(COPY)(self.open_copy)
        app.action(DISMISS)(ack=_ack, lazy=[self.dismiss])
        app.view(EDIT_VIEW)(ack=self.check_edit, lazy=[self.send_edit])
        app.view(REFINE_VIEW)(self.submit_refine)

    # Buttons

    async def send(self, body: dict[str, Any]) -> None:
        """Send as me: post the draft as the user, once; the card becomes a "Sent" note."""
        click = _Click.read(body)
        suggestion = await self._usable(click, need_unsent=True)
        if suggestion is not None:
            await self._send_as_user(click.user_id, click.team_id, suggestion, suggestion.text, click.response_url)

    async def open_edit(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """Edit & send: a modal with the draft in editable inputs (first the connect link, when the user has no
        account connected to send with)."""
        click = _Click.read(body)
        suggestion = await self._usable(click, need_unsent=True)
        if (
            suggestion is not None
            and await self._user_token(click.team_id or suggestion.workspace_id, click.user_id) is None
        ):
            await self._note(click.response_url, self._connect_text(), replace=False)
        elif suggestion is not None:
            await self._open(context, click, edit_view(suggestion.id, suggestion.text, response_url=click.response_url))
        await ack()

    async def open_refine(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """Refine: a modal of presets and free words; its submission queues a refine job."""
        click = _Click.read(body)
        suggestion = await self._usable(click, need_unsent=True)
        if suggestion is not None:
            await self._open(context, click, refine_view(suggestion.id, response_url=click.response_url))
        await ack()

    async def open_copy(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """Copy: a modal showing the plain text."""
        click = _Click.read(body)
        suggestion = await self._usable(click, need_unsent=False)
        if suggestion is not None:
            await self._open(context, click, copy_view(suggestion.text))
        await ack()

    async def regenerate(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """Regenerate: queue a job that drafts again from the same source; the card is replaced when it is done."""
        click = _Click.read(body)
        suggestion = await self._usable(click, need_unsent=True)
        if suggestion is not None:
            data = self._job_data("regenerate", click.suggestion_id, suggestion, click.response_url, context)
            # One job per revision of the card: a double click (two trigger ids) regenerates once, and pays once.
            queued = await self._enqueue(data, f"regenerate-{suggestion.id}-r{suggestion.revision}")
            if not queued:
                await self._note(click.response_url, TRY_AGAIN_TEXT, replace=False)
        await ack()

    async def dismiss(self, body: dict[str, Any]) -> None:
        """Dismiss: delete the card (a draft that is gone already goes the same way)."""
        click = _Click.read(body)
        suggestion = await self._suggestions.get(click.suggestion_id)
        if suggestion is not None and suggestion.user_id != click.user_id:
            await self._note(click.response_url, NOT_YOURS_TEXT, replace=False)
            return
        if suggestion is not None:
            await self._suggestions.dismiss(suggestion.id)
            await self._free_thread(suggestion)
        await self._respond(click.response_url, {"delete_original": True})

    # Modal submissions

    async def check_edit(self, ack: AsyncAck, view: dict[str, Any]) -> None:
        """Close the Edit modal, or keep it open with an error when the reply is empty."""
        if not edited_text(_state(view)).strip():
            await ack(response_action="errors", errors={f"{EDIT_BLOCK_PREFIX}0": EMPTY_EDIT_TEXT})
            return
        await ack()

    async def send_edit(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The edited reply: posted as the user, and kept with the draft (an edit is a good example of their voice)."""
        text = edited_text(_state(view))
        metadata = read_metadata(_str(view.get("private_metadata")) or "")
        user_id, team_id = _user(body)
        if not text.strip() or metadata is None or user_id is None:
            return
        suggestion = await self._suggestions.get(metadata.suggestion_id)
        if suggestion is None:
            await self._note(metadata.response_url, GONE_TEXT, replace=True)
            return
        if suggestion.user_id != user_id:
            await self._note(metadata.response_url, NOT_YOURS_TEXT, replace=False)
            return
        await self._send_as_user(user_id, team_id, suggestion, text, metadata.response_url)

    async def submit_refine(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """Queue the refine job (the modal closes), or keep the modal open saying what to fix."""
        instruction, errors = refine_instruction(_state(view))
        metadata = read_metadata(_str(view.get("private_metadata")) or "")
        user_id, _ = _user(body)
        if errors or instruction is None:
            await ack(response_action="errors", errors=errors)
            return
        suggestion = await self._suggestions.get(metadata.suggestion_id) if metadata is not None else None
        if metadata is None or suggestion is None or suggestion.user_id != user_id:
            refusal = GONE_TEXT if suggestion is None else NOT_YOURS_TEXT
            await ack(response_action="errors", errors={INSTRUCTION_BLOCK: refusal})
            return
        if suggestion.sent_at is not None:
            await ack(response_action="errors", errors={INSTRUCTION_BLOCK: ALREADY_SENT_TEXT})
            return
        data = self._job_data("refine", suggestion.id, suggestion, metadata.response_url, context, instruction)
        # One refine per modal: a re-sent submission of the same view adds nothing.
        if not await self._enqueue(data, f"refine-{_str(view.get('id')) or _str(body.get('trigger_id'))}"):
            await ack(response_action="errors", errors={INSTRUCTION_BLOCK: TRY_AGAIN_TEXT})
            return
        await ack()

    # Shared steps

    async def _usable(self, click: _Click, *, need_unsent: bool) -> Suggestion | None:
        """The clicked draft when this user may act on it; otherwise they are told why in plain words."""
        suggestion = await self._suggestions.get(click.suggestion_id)
        if suggestion is None:
            await self._note(click.response_url, GONE_TEXT, replace=True)
            return None
        if suggestion.user_id != click.user_id:
            log.info("card action refused: not the draft's owner", suggestion=suggestion.id, user=click.user_id)
            await self._note(click.response_url, NOT_YOURS_TEXT, replace=False)
            return None
        if need_unsent and suggestion.sent_at is not None:
            await self._note(click.response_url, ALREADY_SENT_TEXT, replace=True)
            return None
        return suggestion

    async def _send_as_user(
        self, user_id: str, team_id: str | None, suggestion: Suggestion, text: str, response_url: str | None
    ) -> None:
        """Post `text` as the user into the draft's conversation (its thread when there is one), exactly once."""
        token = await self._user_token(team_id or suggestion.workspace_id, user_id)
        if token is None:
            await self._note(response_url, self._connect_text(), replace=False)
            return
        edited = text != suggestion.text
        claim = await self._suggestions.claim_send(suggestion.id, user_id, text, edited=edited)
        if claim != "claimed":
            words = {"gone": GONE_TEXT, "not_owner": NOT_YOURS_TEXT}.get(claim, ALREADY_SENT_TEXT)
            await self._note(response_url, words, replace=claim != "not_owner")
            return
        client = self._web_client(token)
        try:
            # Escaped like every draft we show: a drafted "<!channel>" must not notify a whole channel.
            response = await client.chat_postMessage(
                channel=suggestion.channel_id, text=escape_mrkdwn(text), thread_ts=suggestion.thread_ts
            )
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._suggestions.release_send(suggestion.id)
            error = _slack_error(exc)
            log.warning("send as user failed", suggestion=suggestion.id, error=error or type(exc).__name__)
            reason = _POST_REFUSALS.get(error or "", "Slack didn't take the message; please try again")
            await self._note(response_url, f"I couldn't send it as you: {reason}.", replace=False)
            return
        ts = response.get("ts")
        if isinstance(ts, str):
            await self._suggestions.record_sent_ts(suggestion.id, ts)
        log.info("draft sent as the user", suggestion=suggestion.id, edited=edited)
        await self._free_thread(suggestion)
        if edited and (await self._preferences.get(suggestion.workspace_id, user_id)).learn_from_messages:
            await self._style.add_sent_edit(suggestion.workspace_id, user_id, text)
        await self._note(response_url, SENT_TEXT.format(channel=suggestion.channel_id), replace=True)

    async def _free_thread(self, suggestion: Suggestion) -> None:
        """A card acted on no longer holds its thread's one open passive suggestion (a no-op for direct drafts)."""
        key = thread_key(suggestion.thread_ts, suggestion.source_ts or "", is_dm=suggestion.channel_id.startswith("D"))
        await self._watches.close_suggestion(suggestion.workspace_id, suggestion.user_id, suggestion.channel_id, key)

    async def _user_token(self, team_id: str, user_id: str) -> str | None:
        if self._tokens is None:
            return None
        return await self._tokens.user_token_for(team_id, user_id)

    def _web_client(self, token: str) -> AsyncWebClient:
        return AsyncWebClient(token=token, base_url=self._settings.slack_api_url, session=self._slack_session)

    def _connect_text(self) -> str:
        if self._settings.slack_client_id is None:
            return NO_CONNECT_TEXT
        return CONNECT_TEXT.format(url=self._settings.public_url or "")

    def _job_data(
        self,
        kind: str,
        suggestion_id: str,
        suggestion: Suggestion,
        response_url: str | None,
        context: AsyncBoltContext,
        instruction: str | None = None,
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "suggestion_id": suggestion_id,
            "workspace_id": suggestion.workspace_id,
            "user_id": suggestion.user_id,
            "channel_id": suggestion.channel_id,
            "enterprise_id": context.enterprise_id,
            "instruction": instruction,
            "response_url": response_url,
            "request_id": _str(context.get("request_id")),
        }

    async def _enqueue(self, data: dict[str, Any], job_id: str) -> bool:
        values = {key: value for key, value in data.items() if value is not None}
        try:
            async with asyncio.timeout(ACTION_DEADLINE_S):
                result = await queue_card_job(
                    self._queue, values, job_id=job_id, max_output_tokens=self._settings.ai_max_tokens
                )
        except InvalidJobDataError as exc:
            log.warning("card job refused: invalid", reason=str(exc))
            return False
        except NotReplicatedError as exc:
            log.warning("card job queued without replica confirmation", error=str(exc))
            return True
        except (RedisError, OSError, TimeoutError) as exc:
            log.error("card job not queued: redis unavailable", error=type(exc).__name__)
            return False
        log.info("card job queued" if result.created else "card job already queued", job_id=result.job_id)
        return True

    async def _open(self, context: AsyncBoltContext, click: _Click, view: dict[str, Any]) -> None:
        """views.open within the trigger's 3 s; a failure is told on the card, never raised at Slack."""
        client = context.client
        if client is None or click.trigger_id is None:
            await self._note(click.response_url, TRY_AGAIN_TEXT, replace=False)
            return
        try:
            async with asyncio.timeout(ACTION_DEADLINE_S):
                await client.views_open(trigger_id=click.trigger_id, view=view)
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("views.open failed", error=_slack_error(exc) or type(exc).__name__)
            await self._note(click.response_url, TRY_AGAIN_TEXT, replace=False)

    async def _note(self, response_url: str | None, text: str, *, replace: bool) -> None:
        """A plain-words answer on the card: replacing it (`replace`) or as a new ephemeral note under it."""
        message = note_message(text)
        payload = {"response_type": "ephemeral", "replace_original": replace, "text": message.text}
        await self._respond(response_url, {**payload, "blocks": message.blocks})

    async def _respond(self, response_url: str | None, payload: Mapping[str, Any]) -> None:
        if response_url is None:
            return
        try:
            await self._delivery.respond(response_url, payload)
        except Exception as exc:  # the answer is best effort; the click's work is done or refused already
            log.warning("card answer not posted", error=type(exc).__name__)


def card_token_source(settings: Settings, installation_store: Any) -> TokenSource | None:
    """Users' tokens for Send as me: the OAuth installation store; single-workspace mode has no user tokens."""
    if installation_store is not None and settings.slack_client_id is not None:
        return InstallationStoreTokenSource(installation_store, token_rotator(settings))
    if settings.slack_bot_token is not None:
        return StaticTokenSource(settings.slack_bot_token.get_secret_value())
    return None


class _Click:
    """The ids of one button click (block_actions)."""

    __slots__ = ("response_url", "suggestion_id", "team_id", "trigger_id", "user_id")

    def __init__(
        self, suggestion_id: str, user_id: str, team_id: str | None, trigger_id: str | None, response_url: str | None
    ) -> None:
        self.suggestion_id = suggestion_id
        self.user_id = user_id
        self.team_id = team_id
        self.trigger_id = trigger_id
        self.response_url = response_url

    @classmethod
    def read(cls, body: Mapping[str, Any]) -> _Click:
        actions = body.get("actions")
        action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], Mapping) else {}
        user_id, team_id = _user(body)
        return cls(
            suggestion_id=_str(action.get("value")) or "",
            user_id=user_id or "",
            team_id=team_id,
            trigger_id=_str(body.get("trigger_id")),
            response_url=_str(body.get("response_url")),
        )


async def _ack(ack: AsyncAck) -> None:
    await ack()


def _user(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    user = body.get("user")
    if not isinstance(user, Mapping):
        return None, None
    team = body.get("team")
    team_id = _str(team.get("id")) if isinstance(team, Mapping) else None
    return _str(user.get("id")), team_id or _str(user.get("team_id"))


def _state(view: Mapping[str, Any]) -> Mapping[str, Any]:
    state = view.get("state")
    values = state.get("values") if isinstance(state, Mapping) else None
    return values if isinstance(values, Mapping) else {}


def _slack_error(exc: BaseException) -> str | None:
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error")
        return error if isinstance(error, str) else None
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
