"""Bolt listeners that turn Slack requests (message shortcut, slash command, app_mention) into queued AI jobs; the
App Home and watched-conversation listeners live in app_home.py and watch.py."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.config import Settings
from slack_backend.jobs.queues import queue_ai_response
from slack_backend.jobs.types import MAX_TRIGGER_TEXT_CHARS, TriggerKind
from slack_backend.logging import get_logger
from slack_backend.queue import InvalidJobDataError, NotReplicatedError, Queue
from slack_backend.slack.home_view import HOME_ACTION_PREFIX
from slack_backend.slack.tokens import USER_SCOPES
from slack_backend.web._authorize import CachedAuthorize
from slack_backend.web._errors import QueueUnavailableError
from slack_backend.web.app_home import AppHome, UserStores
from slack_backend.web.card_actions import CardActions, card_token_source
from slack_backend.web.install_guard import AllowedTeamsOAuthFlow
from slack_backend.web.watch import WATCH_WORDS, Watching

log = get_logger(__name__)

DRAFT_REPLY_CALLBACK_ID = "draft_reply"
# reactions:write: a mention shows an hourglass reaction while its draft is written (slack/delivery.py).
# im:history, mpim:history: the only threads Slack lets a bot token read are in DMs and group DMs (channel threads
# need the user's own token), and the message events of watched DMs; users:read: the model is told who wrote each
# message, and a user's time zone sets quiet hours.
OAUTH_SCOPES = (
    "commands",
    "chat:write",
    "app_mentions:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "reactions:write",
    "users:read",
)
# The Events API events the app acts on (the manifest subscribes to exactly these): message.* feed watched
# conversations (web/watch.py); app_home_opened publishes the Home tab (web/app_home.py).
SUBSCRIBED_EVENTS = (
    "app_mention",
    "app_home_opened",
    "message.channels",
    "message.groups",
    "message.im",
    "message.mpim",
)
INSTALL_PATH = "/slack/install"
REDIRECT_URI_PATH = "/slack/oauth_redirect"

ACK_TEXT = "Drafting a reply... I'll send it here shortly."
TRY_AGAIN_TEXT = "I couldn't queue your request right now, please try again in a minute."
NO_TEXT_TEXT = "That message has no text I can draft a reply to."
NOT_ALLOWED_TEXT = "This app isn't enabled for this workspace. Please ask the person who runs it."
MENTION_USAGE_TEXT = (
    'Mention me in a thread to draft your reply to it (add words to say how, like "decline politely"), '
    "or mention me with the message you want to answer."
)
INVALID_TEXT = "I couldn't draft a reply for that: Slack sent a request I didn't expect. Please try again."

# A user-facing note after a failed enqueue must not push the answer to Slack past its 3 s deadline (with the
# enqueue deadline below, a shortcut answers within 2.5 s at worst).
ERROR_NOTE_TIMEOUT_S = 1.0
# Slack gives up on an answer after 3 s: an enqueue that has not finished by then (a hung Redis) is abandoned
# in time for the user to hear "try again", or for an event to get the 5xx that makes Slack deliver it again.
ENQUEUE_DEADLINE_S = 1.5
_SIGNING_SECRET_BYTES = 32
# Mentions look like <@U0123> or <@U0123|name>; the trailing blanks go too, so "hi <@B> there" reads "hi there".
_LEADING_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>[ \t]*")


def too_long_text(limit_chars: int) -> str:
    """The plain message for a trigger text over the limit."""
    return f"Your message is too long to draft a reply for (limit {limit_chars} characters)."


def usage_text(command: str) -> str:
    """The help shown for a slash command given no text."""
    return (
        f"Paste the message you want to answer after the command, like `{command} Can you send me the Q3 numbers "
        "by Friday?`. To answer a message in a channel, use the *Draft a reply* shortcut on that message. "
        f"`{command} watch` in a conversation suggests replies there when you are mentioned or written to "
        f"(`{command} unwatch` stops it); your settings are on the app's Home tab."
    )


def resolve_signing_secret(settings: Settings) -> str:
    """The configured signing secret, or a fresh random one so an offline demo still starts.

    A random secret verifies only requests signed with it (the CLI's `try` command reads it from the web app's
    state), never real Slack traffic; a warning says so.
    """
    if settings.slack_signing_secret is not None:
        return settings.slack_signing_secret.get_secret_value()
    log.warning(
        "SLACK_SIGNING_SECRET is not set: using a random secret for this process, so requests from Slack "
        "cannot be verified (and are refused) until it is set"
    )
    return secrets.token_hex(_SIGNING_SECRET_BYTES)


def strip_bot_mention(text: str, bot_user_id: str | None) -> str:
    """Remove the bot's own mentions from a message (a leading mention when the bot's id is unknown)."""
    if bot_user_id:
        pattern = re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>[ \t]*")
        return pattern.sub("", text).strip()
    return _LEADING_MENTION.sub("", text).strip()


def build_bolt_app(
    settings: Settings,
    queue: Queue,
    *,
    client: AsyncWebClient | None = None,
    installation_store: AsyncInstallationStore | None = None,
    oauth_state_store: AsyncOAuthStateStore | None = None,
    signing_secret: str | None = None,
    engine: AsyncEngine | None = None,
    slack_session: aiohttp.ClientSession | None = None,
) -> AsyncApp:
    """Build the Bolt app whose listeners enqueue AI response jobs before Slack gets its answer.

    Args:
        settings: SLACK_CLIENT_ID/SECRET select multi-workspace OAuth; else SLACK_BOT_TOKEN is the one token.
        queue: the ai-responses queue.
        client: the Web API client (default: one for SLACK_API_URL, with the bot token in single-workspace mode).
        installation_store: OAuth mode: where installations are kept (Bolt's file store when None).
        oauth_state_store: OAuth mode: where install states are kept (Bolt's file store when None).
        signing_secret: verifies requests; default `resolve_signing_secret(settings)`.
        engine: the database of saved drafts, users' preferences and watches; without it the suggestion card's
            buttons, App Home and watching do nothing.
        slack_session: the app's shared aiohttp session for Slack's Web API, notes and response_url posts
            (slack/outbound.py), left open; None: one per call or post.
    """
    secret = resolve_signing_secret(settings) if signing_secret is None else signing_secret
    oauth_mode = settings.slack_client_id is not None and settings.slack_client_secret is not None
    bot_token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token is not None else None
    if client is None:
        client = AsyncWebClient(
            token=None if oauth_mode else bot_token, base_url=settings.slack_api_url, session=slack_session
        )

    options: dict[str, Any] = {}
    cached_authorize: CachedAuthorize | None = None
    if oauth_mode:
        oauth_settings = AsyncOAuthSettings(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret.get_secret_value() if settings.slack_client_secret else None,
            scopes=list(OAUTH_SCOPES),
            # Each user may also connect their own account, so the worker can read what the bot may not.
            user_scopes=list(USER_SCOPES),
            installation_store=installation_store,
            state_store=oauth_state_store,
            install_path=INSTALL_PATH,
            redirect_uri_path=REDIRECT_URI_PATH,
        )
        # Installs from workspaces SLACK_ALLOWED_TEAMS leaves out store nothing (web/install_guard.py).
        options["oauth_flow"] = AllowedTeamsOAuthFlow(
            client=client, settings=oauth_settings, allowed=settings.allowed_teams()
        )
        # No auth.test round trips to Slack before every click's ack (web/_authorize.py).
        cached_authorize = CachedAuthorize(oauth_settings.authorize)
        options["authorize"] = cached_authorize
    elif client.token is None:
        # Bolt refuses to start without a token; the offline demo has none, and queueing needs none.
        log.warning("SLACK_BOT_TOKEN is not set: requests are queued, but the app cannot call Slack")
        options["authorize"] = _authorize_without_token

    app = AsyncApp(
        name="slack-backend",
        signing_secret=secret,
        client=client,
        # The job must be in Redis before Slack gets its 200, so listeners run before the answer.
        process_before_response=True,
        **options,
    )
    if oauth_mode:
        # app_uninstalled deletes the workspace's tokens (its queued jobs then fail at once: no token);
        # tokens_revoked deletes the named users' and bot's tokens.
        app.enable_token_revocation_listeners()
    if cached_authorize is not None:
        app.use(cached_authorize.forget_on_revocation)
    stores = None if engine is None else UserStores.on(engine)
    watching = Watching(settings, queue, stores)
    home = AppHome(settings, stores)
    listeners = _Listeners(settings, queue, watching, slack_session)
    # Runs after Bolt's authorization and before every listener, so no listener can forget it.
    app.use(listeners.allowed_teams_only)
    app.message_shortcut(DRAFT_REPLY_CALLBACK_ID)(listeners.on_draft_shortcut)
    app.command(settings.slack_slash_command)(listeners.on_slash_command)
    app.event(SUBSCRIBED_EVENTS[0])(listeners.on_app_mention)
    app.event("message")(watching.on_message)
    app.event("app_home_opened")(home.on_home_opened)
    app.action(re.compile(f"^{HOME_ACTION_PREFIX}"))(home.on_action)
    if engine is not None:
        tokens = card_token_source(settings, installation_store)
        CardActions(settings, queue, engine, tokens, slack_session=slack_session).register(app)
    app.error(_on_error)
    return app


class _Listeners:
    """The listener functions, sharing the settings and the queue; Bolt passes arguments by parameter name."""

    def __init__(
        self, settings: Settings, queue: Queue, watching: Watching, session: aiohttp.ClientSession | None
    ) -> None:
        self._settings = settings
        self._session = session
        self._queue = queue
        self._watching = watching
        # The job model caps the text too; the smaller limit is the one a user can be told about.
        self._limit_chars = min(settings.max_trigger_text_chars, MAX_TRIGGER_TEXT_CHARS)

    async def allowed_teams_only(
        self, body: dict[str, Any], context: AsyncBoltContext, next_: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        """Middleware: refuse, politely and with a 200, requests from workspaces SLACK_ALLOWED_TEAMS leaves out."""
        allowed = self._settings.allowed_teams()
        team, enterprise = _identity(context, body)
        if not allowed or team in allowed or enterprise in allowed:
            return await next_()
        log.info("request refused: workspace not in SLACK_ALLOWED_TEAMS", team=team, enterprise=enterprise)
        if "command" in body:
            reply = {"text": NOT_ALLOWED_TEXT, "response_type": "ephemeral"}
            return BoltResponse(status=200, body=json.dumps(reply), headers={"content-type": "application/json"})
        # A shortcut shows nothing of its HTTP answer; an event gets a 200 so Slack does not deliver it again.
        await _tell_user(_str(body.get("response_url")), NOT_ALLOWED_TEXT, self._session)
        return BoltResponse(status=200, body="")

    async def on_draft_shortcut(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """Message shortcut "Draft a reply": queue a draft for the message it was used on."""
        message = _mapping(body.get("message"))
        text = _str(message.get("text")) or ""
        team, enterprise = _identity(context, body)
        data = {
            "workspace_id": team,
            "enterprise_id": enterprise,
            "user_id": _id(body.get("user")),
            "channel_id": _id(body.get("channel")),
            "trigger": TriggerKind.MESSAGE_ACTION,
            "trigger_text": text,
            "message_ts": _str(message.get("ts")) or _str(body.get("message_ts")),
            "thread_ts": _str(message.get("thread_ts")),
            "trigger_user_id": _str(message.get("user")),
            "response_url": _str(body.get("response_url")),
            "request_id": _str(context.get("request_id")),
        }
        problem = NO_TEXT_TEXT if not text.strip() else await self._enqueue_interactive(data, body.get("trigger_id"))
        # Slack shows nothing from a shortcut's HTTP answer: only a post to response_url reaches the user.
        await ack()
        if problem is not None:
            await _tell_user(data["response_url"], problem, self._session)

    async def on_slash_command(self, ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
        """The slash command: queue a draft reply to the text given after it."""
        text = _str(command.get("text")) or ""
        if not text.strip():
            await ack(text=usage_text(self._settings.slack_slash_command), response_type="ephemeral")
            return
        if text.strip().lower() in WATCH_WORDS:
            answer = await self._watching.command(text.strip().lower(), command, context)
            await ack(text=answer, response_type="ephemeral")
            return
        team, enterprise = _identity(context, command)
        data = {
            "workspace_id": team,
            "enterprise_id": enterprise,
            "user_id": _str(command.get("user_id")),
            "channel_id": _str(command.get("channel_id")),
            "trigger": TriggerKind.SLASH_COMMAND,
            "trigger_text": text,
            "response_url": _str(command.get("response_url")),
            "request_id": _str(context.get("request_id")),
        }
        problem = await self._enqueue_interactive(data, command.get("trigger_id"))
        await ack(text=problem or ACK_TEXT, response_type="ephemeral")

    async def on_app_mention(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
    ) -> None:
        """An @-mention of the bot: queue a draft.

        In a thread, the draft replies to the thread, and the words said with the mention (if any) are the user's
        instruction for it ("@app decline politely"); a bare mention in a thread is enough. Outside a thread the
        words are the message to reply to, and a bare mention has nothing to answer.

        Raises:
            QueueUnavailableError: Redis is down; the error handler answers 503 so Slack re-delivers the event.
        """
        fields = {"team": _str(body.get("team_id")), "user": _str(event.get("user")), "trigger": TriggerKind.MENTION}
        if event.get("bot_id") or event.get("subtype"):
            log.debug("mention ignored: from a bot or a message subtype", **fields)
            return
        text = strip_bot_mention(_str(event.get("text")) or "", context.bot_user_id)
        message_ts, thread_ts = _str(event.get("ts")), _str(event.get("thread_ts"))
        in_thread = thread_ts is not None and thread_ts != message_ts
        if not text and not in_thread:
            log.info("mention ignored: no text besides the mention, and no thread to reply to", **fields)
            await _tell_in_channel(context, event, request, MENTION_USAGE_TEXT)
            return
        if len(text) > self._limit_chars:
            # Slack's retries would carry the same text: answer 200 and drop it.
            log.warning("mention ignored: text too long", limit_chars=self._limit_chars, chars=len(text), **fields)
            await _tell_in_channel(context, event, request, too_long_text(self._limit_chars))
            return
        team, enterprise = _identity(context, body)
        data = {
            "workspace_id": team,
            "enterprise_id": enterprise,
            "user_id": _str(event.get("user")),
            "channel_id": _str(event.get("channel")),
            "trigger": TriggerKind.MENTION,
            # In a thread the words are how to reply, not what to reply to: the worker reads the thread.
            "trigger_text": None if in_thread else text,
            "instruction": (text or None) if in_thread else None,
            "message_ts": message_ts,
            "thread_ts": thread_ts,
            "request_id": _str(context.get("request_id")),
        }
        event_id = _str(body.get("event_id"))
        retry_num = _header(request, "x-slack-retry-num")
        try:
            await self._enqueue(data, event_id, retry_num=retry_num)
        except InvalidJobDataError as exc:
            log.warning("mention ignored: invalid request", job_id=event_id, reason=str(exc), **fields)
        except (RedisError, OSError, TimeoutError, NotReplicatedError) as exc:
            # NotReplicatedError: stored, but no replica confirmed it; Slack's re-delivery (same event id) adds
            # nothing and is answered once a replica holds the job.
            log.error(
                "event not queued: redis unavailable; answering 503 so Slack retries",
                job_id=event_id,
                retry_num=retry_num,
                error=_describe(exc),
                **fields,
            )
            raise QueueUnavailableError(_describe(exc)) from exc

    async def _enqueue_interactive(self, data: dict[str, Any], trigger_id: object) -> str | None:
        """Enqueue a shortcut's or command's job; None when queued, else the plain reason to tell the user."""
        if len(data["trigger_text"]) > self._limit_chars:
            log.info("request refused: text too long", limit_chars=self._limit_chars, **_log_fields(data))
            return too_long_text(self._limit_chars)
        try:
            await self._enqueue(data, trigger_id)
        except InvalidJobDataError as exc:
            log.warning("request refused: invalid", reason=str(exc), **_log_fields(data))
            return INVALID_TEXT
        except NotReplicatedError as exc:
            # The job is stored and will run unless a failover loses it; "try again" would risk a second draft.
            log.warning("request queued without replica confirmation", error=str(exc), **_log_fields(data))
        except (RedisError, OSError, TimeoutError) as exc:
            log.error("request not queued: redis unavailable", error=_describe(exc), **_log_fields(data))
            return TRY_AGAIN_TEXT
        return None

    async def _enqueue(self, data: dict[str, Any], job_id: object, *, retry_num: str | None = None) -> None:
        """Validate and add the job under the Slack-given id, so a re-delivery adds nothing.

        Raises:
            TimeoutError: Redis did not answer within ENQUEUE_DEADLINE_S. The add may still land; the same id
                (event_id, trigger_id) keeps a re-delivery from adding it twice.
        """
        values = {key: value for key, value in data.items() if value is not None}
        async with asyncio.timeout(ENQUEUE_DEADLINE_S):
            result = await queue_ai_response(
                self._queue, values, job_id=_str(job_id), max_output_tokens=self._settings.ai_max_tokens
            )
        log.info(
            "request queued" if result.created else "request already queued",
            job_id=result.job_id,
            created=result.created,
            retry_num=retry_num,
            **_log_fields(data),
        )


async def _authorize_without_token(
    enterprise_id: str | None, team_id: str | None, user_id: str | None
) -> AuthorizeResult:
    """Authorize every verified request with its own ids and no token (no Slack token is configured)."""
    return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id)


async def _on_error(error: Exception) -> BoltResponse:
    """Answer a failed listener with a 5xx, so Slack delivers the event again."""
    if isinstance(error, QueueUnavailableError):
        # Already logged, with its ids, where it happened.
        return BoltResponse(status=503, body="queue unavailable")
    # Only the error's type and message: a traceback's frames could hold a request's text.
    log.error("slack request failed", error=_describe(error))
    return BoltResponse(status=500, body="")


async def _tell_in_channel(
    context: AsyncBoltContext, event: Mapping[str, Any], request: AsyncBoltRequest, text: str
) -> None:
    """Best effort: an ephemeral note to the mention's author where they wrote it, within a short deadline.

    Only on Slack's first delivery (a retry already had its note) and only with a token to post with.
    """
    client, channel, user = context.client, _str(event.get("channel")), _str(event.get("user"))
    if client is None or client.token is None or channel is None or user is None:
        return
    if _header(request, "x-slack-retry-num") is not None:
        return
    try:
        async with asyncio.timeout(ERROR_NOTE_TIMEOUT_S):
            await client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=_str(event.get("thread_ts"))
            )
    except Exception as exc:  # the note is a courtesy: failing to send it must not fail the request
        log.warning("could not tell the user why the mention was ignored", error=type(exc).__name__)


async def _tell_user(response_url: str | None, text: str, session: aiohttp.ClientSession | None) -> None:
    """Best effort: post an ephemeral note to the user through response_url, within a short deadline (on the
    app's shared `session` when there is one)."""
    if response_url is None:
        return
    try:
        async with asyncio.timeout(ERROR_NOTE_TIMEOUT_S):
            await AsyncWebhookClient(response_url, session=session).send(
                text=text, response_type="ephemeral", replace_original=False
            )
    except Exception as exc:  # the note is a courtesy: failing to send it must not fail the request
        log.warning("could not tell the user why the request failed", error=_describe(exc))


def _identity(context: AsyncBoltContext, body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(workspace id, Enterprise Grid org id) of the installation Bolt authorized this request for.

    Not the body's raw ids: in a Slack Connect channel those can name the other organization, and on Enterprise
    Grid an org-wide install has no team of its own. Bolt's authorize result (then its context, which prefers
    `authorizations[0]`) names ours; the raw body is only the last resort.
    """
    result = context.authorize_result
    team = (result.team_id if result else None) or context.team_id
    enterprise = (result.enterprise_id if result else None) or context.enterprise_id
    if team is None:
        team = _id(body.get("team")) or _str(body.get("team_id")) or _str(_mapping(body.get("user")).get("team_id"))
    return team, enterprise


def _log_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every ingress log line carries: ids, never text or tokens."""
    return {"team": data.get("workspace_id"), "user": data.get("user_id"), "trigger": data.get("trigger")}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _header(request: AsyncBoltRequest, name: str) -> str | None:
    values = request.headers.get(name) or []
    return values[0] if values else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: object) -> str | None:
    """The id of a Slack object given either as `{"id": ...}` or as the bare id."""
    return _str(value.get("id")) if isinstance(value, Mapping) else _str(value)
