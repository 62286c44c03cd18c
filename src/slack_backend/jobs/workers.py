"""The ai-responses processor: validate, read the thread, ask Claude, save the draft, deliver it; and its worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.ai import Draft, Drafter, DraftRequest, make_drafter
from slack_backend.ai.errors import AIRejectedError, TransientAIError, user_message
from slack_backend.config import Settings
from slack_backend.jobs.card_jobs import CARD_JOB_NAMES, CardJobProcessor, card_for
from slack_backend.jobs.context import ContextReader, local_now
from slack_backend.jobs.ledger import RedisDeliveryLedger
from slack_backend.jobs.passive import PassiveCheck
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.jobs.quota import QuotaGuard, QuotaVerdict
from slack_backend.jobs.slack_limits import SlackCallLimiter, slack_call_limits
from slack_backend.jobs.types import AIResponseJobData, AIResponseJobResult
from slack_backend.jobs.voice import VoiceSource
from slack_backend.jobs.while_calling import WhileCalling, then_begin_pending
from slack_backend.queue import (
    Job,
    JobEvent,
    KeepJobs,
    QueueLimits,
    RateGate,
    RateLimit,
    TokenBudget,
    UnrecoverableError,
    Worker,
)
from slack_backend.queue.connection import RedisClient
from slack_backend.slack import (
    SlackDelivery,
    SlackRejectedError,
    StaticTokenSource,
    TokenSource,
    user_facing_reason,
)
from slack_backend.slack.card import card_message
from slack_backend.slack.context import MARKETPLACE_PAGE_SIZE, NON_MARKETPLACE_PAGE_SIZE
from slack_backend.slack.outbound import outbound_session
from slack_backend.slack.response_urls import is_loopback_url
from slack_backend.slack.tokens import InstallationStoreTokenSource, token_cipher, token_rotator
from slack_backend.store import (
    AuditLog,
    Preferences,
    PreferenceStore,
    QuotaStore,
    StyleExampleStore,
    Suggestion,
    SuggestionStore,
    WatchStore,
    create_engine,
    create_tables,
    installation_store,
)
from slack_backend.store.db import utc_now

log = structlog.get_logger("slack_backend.jobs.workers")


def connect_note(public_url: str) -> str:
    """The line under a draft written without its thread: connecting one's own account lets us read it next time."""
    # A bare URL: drafts are shown with <, > and & escaped, and Slack links a bare URL by itself.
    return (
        "_I couldn't read this conversation, so this draft is based on your message alone. "
        f"Connect your Slack account at {public_url}/slack/connect and I can read it next time._"
    )


# Under a draft whose thread could not be read even with the user's own token (a channel they are not in).
UNREADABLE_NOTE = "_I couldn't read this conversation, so this draft is based on your message alone._"

# Job starts per window, as a multiple of the model calls allowed (see ai_start_limit).
START_LEAD = 2


class AIResponseProcessor:
    """Turns one ai-responses job into a delivered draft. Tokens are fetched per use and never kept.

    With `suggestions`, the draft is saved before it is delivered: a rerun of the job (a delivery retry, a stall,
    an operator's retry) delivers the saved draft without calling the model, or does nothing once it was delivered.
    """

    def __init__(
        self,
        *,
        drafter: Drafter,
        delivery: SlackDelivery,
        tokens: TokenSource | None,
        slack_api_url: str,
        audit: AuditLog | None = None,
        context_page_size: int = NON_MARKETPLACE_PAGE_SIZE,
        context_reader: ContextReader | None = None,
        clock: Callable[[], datetime] | None = None,
        quota: QuotaGuard | None = None,
        hold_queue: Callable[[int], Awaitable[None]] | None = None,
        suggestions: SuggestionStore | None = None,
        connect_url: str | None = None,
        rate_gate: RateGate | None = None,
        voice: VoiceSource | None = None,
        passive: PassiveCheck | None = None,
    ) -> None:
        """`connect_url`: the service's public https address; drafts whose thread could not be read link to its
        /slack/connect (OAuth mode only). `voice`: the requester's preferences and style examples. `passive`: whether
        a passive suggestion is still wanted when it starts."""
        self._voice = voice
        self._passive = passive
        self._drafter = drafter
        self._suggestions = suggestions
        self._connect_url = connect_url
        self._delivery = delivery
        self._tokens = tokens
        self._slack_api_url = slack_api_url
        self._context_reader = context_reader or ContextReader(
            tokens=tokens, slack_api_url=slack_api_url, limiter=None, page_size=context_page_size
        )
        self._clock = clock or utc_now
        self._audit = audit
        self._quota = quota
        self._hold_queue = hold_queue
        self.rate_gate = rate_gate
        # Refine and Regenerate of a card (jobs/card_jobs.py), on this same queue and under the same limits.
        self.card_jobs = CardJobProcessor(self, suggestions) if suggestions is not None else None

    async def __call__(self, job: Job) -> dict[str, Any]:
        if job.name in CARD_JOB_NAMES and self.card_jobs is not None:
            return await self.card_jobs(job)
        started = time.monotonic()
        data = parse_job_data(job)
        structlog.contextvars.bind_contextvars(workspace=data.workspace_id)
        # The audit's start row is written while the model call is in flight (jobs/while_calling.py), and before
        # anything that finishes it: every way out of the job passes `done()` first, failures included.
        audit = WhileCalling(lambda: self._audit_started(job, data))
        # Whether this job posted already, read while the model thinks: a new draft's post then waits for no round
        # trip to Redis. Only a run of this job could mark it between the read and the post, and leases let no other
        # run of it go on beside this one.
        posted = WhileCalling(lambda: self.delivered_before(job.id))
        try:
            return await self._draft_and_deliver(job, data, audit, posted, started)
        finally:
            posted.drop()
            await audit.done()

    async def _draft_and_deliver(
        self,
        job: Job,
        data: AIResponseJobData,
        audit: WhileCalling[None],
        posted: WhileCalling[bool | None],
        started: float,
    ) -> dict[str, Any]:
        saved, verdict, preferences = await self._start_read(job.id, data)
        # A draft delivered already needs no token: nothing is posted, so nothing is looked up or refreshed either.
        token = "" if saved is not None and saved.status == "delivered" else await self._token(data)
        if saved is not None:
            # A rerun: the model was paid for already. No progress note, no second call.
            job.cost_used = 0
            await audit.done()
            return await self._deliver_saved(job, data, token, saved, started)
        if self._passive is not None and not data.trigger.direct:
            skip = await self._passive.skip_reason(data)
            if skip is not None:
                await audit.done()
                return await self._skip_passive(job, data, skip, started)
        if self._quota is not None:
            if verdict is None:
                verdict = await self._quota.check(data.workspace_id)
            if not verdict.allowed:
                await audit.done()
                return await self._refuse_over_quota(job, data, token, verdict, started)
        # The hourglass reaction goes to Slack beside the thread read and the model call: the draft does not wait a
        # round trip to Slack for it. Whatever takes it away (the delivery, the failure note) comes after it landed.
        progress = asyncio.ensure_future(self._delivery.progress(data, token, "Drafting a reply..."))
        try:
            conversation = await self._context_reader.read(data, token)
            context, unreadable = conversation.messages, conversation.refusal is not None
            if data.replies_to_thread and not context and unreadable and self._connect_url is None:
                # A mention in a thread whose messages the app may not read leaves nothing to reply to, unless the
                # user can connect their own account (OAuth mode): then the draft follows their words and links
                # there. (A thread read refused for Slack's rate limit is neither: the draft is written without it.)
                refusal = conversation.refusal or "not_in_channel"
                raise SlackRejectedError("the thread could not be read", error=refusal)
            request = DraftRequest(
                trigger_text=data.trigger_text,
                context=context,
                requester_user_id=data.user_id,
                instruction=data.instruction,
                names=conversation.names,
                now=local_now(self._clock(), conversation.tz),
                trigger_user_id=data.trigger_user_id,
                voice=None if self._voice is None else await self._voice.voice_for(data, preferences),
            )
            with audit.call(), posted.call():
                draft = await self._drafter.draft(request)
        finally:
            # Never raises (progress is best effort); on a cancel, it still lands before the job is released.
            await progress
        await audit.done()
        job.cost_used = draft.input_tokens + draft.output_tokens
        await self._respect_provider_limits(draft)
        if draft.cut_short:
            log.info("draft cut short at the output cap", output_tokens=draft.output_tokens)
        # The saved text is what Send as me posts: the card shows the cut-short mark and any note beside it.
        notes: tuple[str, ...] = ()
        if unreadable and self._connect_url is not None and not conversation.connected:
            notes = (connect_note(self._connect_url),)
        elif unreadable and conversation.connected:
            notes = (UNREADABLE_NOTE,)
        elif conversation.note is not None:
            notes = (conversation.note,)
        if self._suggestions is None:
            saved = _unsaved(job.id, data, draft, draft.text)
        else:
            saved = await self._suggestions.save(job.id, **_draft_fields(data, draft, draft.text))
        before = await posted.done()
        return await self._deliver_saved(job, data, token, saved, started, notes=notes, delivered_before=before)

    async def _start_read(
        self, job_id: str, data: AIResponseJobData
    ) -> tuple[Suggestion | None, QuotaVerdict | None, Preferences | None]:
        """The saved draft of this job and, with a quota, the workspace's verdict and the requester's preferences:
        one read when all are kept (they share the database, see build_ai_worker). The verdict is used only if no
        draft was saved; preferences None: the voice reads them itself."""
        if self._suggestions is None:
            return None, None, None
        if self._quota is None:
            return await self._suggestions.get(job_id), None, None
        now, day_start = self._quota.today()
        start = await self._suggestions.draft_start(job_id, data.workspace_id, since=day_start, user_id=data.user_id)
        return start.saved, self._quota.judge(start.daily_tokens, start.tokens_used, now), start.preferences

    async def _deliver_saved(
        self,
        job: Job,
        data: AIResponseJobData,
        token: str,
        saved: Suggestion,
        started: float,
        *,
        notes: tuple[str, ...] = (),
        delivered_before: bool | None = None,
    ) -> dict[str, Any]:
        """Deliver a saved draft as its card unless it was delivered already; its tokens are audited once, with
        the delivery. `delivered_before`: the ledger's answer read during this run's model call (None: read now)."""
        if saved.status == "delivered":
            log.info("draft already delivered: nothing to do", job_id=job.id)
            via, parts, input_tokens, output_tokens = "none", 0, 0, 0
        else:
            card = card_message(card_for(saved, notes=notes))
            receipt = await self._delivery.deliver(
                job.id, data, token, saved.text, offline=saved.offline, card=card, delivered_before=delivered_before
            )
            if self._suggestions is not None:
                await self._suggestions.mark_delivered(job.id)
            via, parts = receipt.via, receipt.parts
            input_tokens, output_tokens = saved.input_tokens, saved.output_tokens
        result = AIResponseJobResult(
            delivered_via=via,
            delivery_parts=parts,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=saved.model,
            offline=saved.offline,
            processing_time_ms=int((time.monotonic() - started) * 1000),
            draft_chars=len(saved.text),
        )
        await self._audit_finished(job.id, "completed", input_tokens, output_tokens, None)
        return result.model_dump(mode="json")

    async def _refuse_over_quota(
        self, job: Job, data: AIResponseJobData, token: str, verdict: QuotaVerdict, started: float
    ) -> dict[str, Any]:
        """No AI call: tell the user when the quota resets, and finish the job (it did what it could)."""
        log.info("over daily quota: no AI call", used=verdict.used, quota=verdict.quota)
        # A passive suggestion was never asked for: its user hears nothing of the quota from it.
        told = data.trigger.direct and await self._delivery.tell_failure(data, token, verdict.user_text())
        if self._passive is not None and not data.trigger.direct:
            await self._passive.release(data)
        job.cost_used = 0
        await self._audit_finished(job.id, "completed", 0, 0, "over_quota")
        return AIResponseJobResult(
            delivered_via="quota_notice" if told else "none",
            delivery_parts=1 if told else 0,
            input_tokens=0,
            output_tokens=0,
            model="",
            offline=False,
            processing_time_ms=int((time.monotonic() - started) * 1000),
            draft_chars=0,
        ).model_dump(mode="json")

    async def _skip_passive(self, job: Job, data: AIResponseJobData, reason: str, started: float) -> dict[str, Any]:
        """No AI call and nothing posted: the passive suggestion is no longer wanted; its thread is free again."""
        log.info("passive suggestion dropped before drafting", reason=reason)
        if self._passive is not None:
            await self._passive.release(data)
        job.cost_used = 0
        await self._audit_finished(job.id, "completed", 0, 0, f"passive_{reason}")
        return AIResponseJobResult(
            delivered_via="none",
            delivery_parts=0,
            input_tokens=0,
            output_tokens=0,
            model="",
            offline=False,
            processing_time_ms=int((time.monotonic() - started) * 1000),
            draft_chars=0,
        ).model_dump(mode="json")

    async def _respect_provider_limits(self, draft: Draft) -> None:
        """When the provider says a limit is spent until its reset, hold every start of the queue until then."""
        if self._hold_queue is None or draft.rate_limits is None:
            return
        hold_s = draft.rate_limits.hold_until_s(datetime.now(UTC))
        if hold_s:
            log.warning("AI provider limit spent: holding the queue", hold_ms=int(hold_s * 1000))
            await self._hold_queue(int(hold_s * 1000))

    async def on_failed(self, event: JobEvent) -> None:
        """A job failed for good: tell the user in plain words when we can reach them, and audit it."""
        if event.job is None or not event.final:
            return
        if event.job.name in CARD_JOB_NAMES and self.card_jobs is not None:
            await self.card_jobs.on_failed(event)
            return
        await self._audit_finished(event.job.id, "failed", 0, 0, _error_kind(event.error))
        try:
            data = parse_job_data(event.job)
        except UnrecoverableError:
            return  # nothing tells us who to answer
        if not data.trigger.direct:
            # Nobody asked for a passive suggestion: no failure note; its thread is free for the next one.
            if self._passive is not None:
                with contextlib.suppress(Exception):  # the slot also frees itself after OPEN_SUGGESTION_TTL
                    await self._passive.release(data)
            return
        token = ""
        with contextlib.suppress(Exception):
            token = await self._token(data)
        reason = _reason_for_user(event.error)
        await self._delivery.tell_failure(data, token, reason)

    async def delivered_before(self, job_id: str) -> bool | None:
        """The delivery ledger's answer for `job_id`; None when Redis did not give it (the post reads it then)."""
        try:
            return await self._delivery.delivered(job_id)
        except RedisError as exc:
            log.info("delivery ledger unread during the model call: read before the post", error=type(exc).__name__)
            return None

    async def _token(self, data: AIResponseJobData) -> str:
        if self._tokens is None:
            return ""  # offline demo: delivery goes through response_url, which needs no token
        return await self._tokens.bot_token(data.workspace_id, data.enterprise_id)

    async def _audit_started(self, job: Job, data: AIResponseJobData) -> None:
        if self._audit is None:
            return
        try:
            # Idempotent: the row exists once, however often the job starts.
            await self._audit.record_queued_and_started(
                job.id, data.workspace_id, data.user_id, data.channel_id, data.trigger, job.attempts_made + 1
            )
        except Exception as exc:  # the audit is a record, never a reason to fail a user's draft
            log.warning("audit write failed", job_id=job.id, error=type(exc).__name__)

    async def _audit_finished(self, job_id: str, status: Any, input_tokens: int, output_tokens: int, kind: Any) -> None:
        if self._audit is None:
            return
        try:
            await self._audit.record_finished(
                job_id, status, input_tokens=input_tokens, output_tokens=output_tokens, error_kind=kind
            )
        except Exception as exc:  # see _audit_started
            log.warning("audit write failed", job_id=job_id, error=type(exc).__name__)


def ai_rate_limit(settings: Settings) -> RateLimit:
    """AI_RATE_LIMIT_MAX model calls per AI_RATE_LIMIT_DURATION_MS: what the call gate holds at the model call."""
    return RateLimit(settings.ai_rate_limit_max, settings.ai_rate_limit_duration_ms)


def ai_start_limit(settings: Settings) -> RateLimit:
    """Job starts may run one window ahead of the model calls (twice their rate); the call gate holds the limit.

    A job reaches its model call 50-500 ms after it starts (quota, token, thread read). Were starts paced at the
    call rate, a slot that frees while the next job still reads its thread would go unused, and the API would see
    ~6% under the limit through a 40-job backlog (measured). Started jobs wait at the gate in start order, so the
    queue's fairness between workspaces still decides who calls next; worker concurrency bounds how many wait.
    """
    return RateLimit(START_LEAD * settings.ai_rate_limit_max, settings.ai_rate_limit_duration_ms)


def ai_queue_limits(settings: Settings) -> QueueLimits:
    """The limits every ai-responses worker obeys: start rate, token budget, per-workspace cap."""
    budget = TokenBudget(settings.ai_tokens_per_minute, 60_000) if settings.ai_tokens_per_minute else None
    return QueueLimits(
        rate=ai_start_limit(settings),
        group_concurrency=settings.workspace_concurrency or None,
        budget=budget,
    )


def parse_job_data(job: Job) -> AIResponseJobData:
    """The job's data as AIResponseJobData; invalid data can never succeed, so it fails the job at once."""
    try:
        return AIResponseJobData.model_validate(job.data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "data" for e in exc.errors())
        raise UnrecoverableError(f"invalid job data ({fields})") from exc


def _unsaved(job_id: str, data: AIResponseJobData, draft: Draft, text: str) -> Suggestion:
    """The draft as a Suggestion that lives only in this run (no store configured: tests and tools)."""
    now = utc_now()
    return Suggestion(id=job_id, **_draft_fields(data, draft, text), status="saved", created_at=now, updated_at=now)


def _draft_fields(data: AIResponseJobData, draft: Draft, text: str) -> dict[str, Any]:
    """What a saved draft records of its request and its model answer (shared by the store and `_unsaved`)."""
    return {
        "workspace_id": data.workspace_id,
        "user_id": data.user_id,
        "channel_id": data.channel_id,
        "thread_ts": data.thread_ts,
        "source_ts": data.message_ts,
        "text": text,
        "model": draft.model,
        "input_tokens": draft.input_tokens,
        "output_tokens": draft.output_tokens,
        "cut_short": draft.cut_short,
        "offline": draft.offline,
        "trigger": data.trigger.value,
        "source_text": data.trigger_text,
        "instruction": data.instruction,
    }


def _reason_for_user(error: BaseException | None) -> str:
    if isinstance(error, AIRejectedError | TransientAIError):
        return user_message(error)
    if error is None:
        return "something went wrong while drafting your reply"
    return user_facing_reason(error)


def _error_kind(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__name__.lower()[:64]


async def build_ai_worker(
    settings: Settings,
    redis: RedisClient,
    cleanup: contextlib.AsyncExitStack,
    *,
    concurrency: int | None = None,
    clock: Callable[[], datetime] | None = None,
    slack_limits: Mapping[str, RateLimit] | None = None,
) -> Worker:
    """The ai-responses worker with the configured limits; what it opens is closed by `cleanup`.

    `slack_limits`: Slack's per-workspace call limits by method (default: what Slack posts, see jobs/slack_limits).
    """
    queue = ai_responses_queue(redis, settings)
    engine = create_engine(settings.database_url)
    cleanup.push_async_callback(engine.dispose)
    cipher = token_cipher(settings)
    await create_tables(engine, cipher)
    tokens: TokenSource | None = None
    if settings.slack_bot_token is not None:
        tokens = StaticTokenSource(settings.slack_bot_token.get_secret_value())
    elif settings.slack_client_id is not None and cipher is not None:
        store = installation_store(engine, settings.slack_client_id, cipher)
        tokens = InstallationStoreTokenSource(store, token_rotator(settings))
    else:
        log.warning("no SLACK_BOT_TOKEN or OAuth app configured: drafts go through response_url only")
    api_key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    # The model call itself takes the rate limit's slot, as its request goes out: what comes before it (quota,
    # token, thread read) takes 50-500 ms that vary, so starts spaced by the window would reach the API bunched.
    rate_gate = queue.call_gate(ai_rate_limit(settings))
    drafter = make_drafter(
        api_key,
        settings.anthropic_model,
        settings.anthropic_base_url,
        settings.ai_max_tokens,
        settings.ai_timeout_s,
        before_call=then_begin_pending(rate_gate.acquire),
    )
    cleanup.push_async_callback(drafter.aclose)
    if api_key is None:
        log.warning("no ANTHROPIC_API_KEY: using the offline stand-in; drafts are clearly labelled placeholders")
    slack_api_url = settings.slack_api_url

    # One aiohttp session for every Slack call and response_url post, for the worker's life: slack_sdk given none
    # opens one per call (a new connection and, to Slack, a TLS handshake); a client per post cost ~20 ms of set-up
    # each, and an aiohttp post costs about a quarter of the CPU of an httpx one.
    session = await cleanup.enter_async_context(outbound_session())

    def client_factory(token: str) -> AsyncWebClient:
        return AsyncWebClient(token=token, base_url=slack_api_url, session=session)

    delivery = SlackDelivery(
        client_factory,
        RedisDeliveryLedger(redis, queue),
        session=session,
        # Loopback response_urls only beside a loopback Slack (tests, the offline demo); never in production.
        allow_loopback_response_url=is_loopback_url(slack_api_url),
    )
    audit = AuditLog(engine)
    quota = QuotaGuard(
        QuotaStore(engine),
        audit,
        default_daily_tokens=settings.workspace_daily_token_quota,
        clock=clock or utc_now,
    )
    processor = AIResponseProcessor(
        drafter=drafter,
        delivery=delivery,
        tokens=tokens,
        slack_api_url=slack_api_url,
        audit=audit,
        context_reader=ContextReader(
            tokens=tokens,
            slack_api_url=slack_api_url,
            session=session,
            limiter=SlackCallLimiter(
                redis,
                settings.redis_prefix,
                slack_limits or slack_call_limits(marketplace_app=settings.slack_marketplace_app),
            ),
            redis=redis,
            cache_prefix=settings.redis_prefix,
            wait_s=settings.slack_context_wait_s,
            page_size=MARKETPLACE_PAGE_SIZE if settings.slack_marketplace_app else NON_MARKETPLACE_PAGE_SIZE,
        ),
        clock=clock,
        quota=quota,
        hold_queue=queue.hold,
        suggestions=SuggestionStore(engine),
        # The link only helps where users can connect an account: OAuth mode.
        connect_url=settings.public_url if settings.slack_client_id is not None else None,
        rate_gate=rate_gate,
        voice=VoiceSource(PreferenceStore(engine), StyleExampleStore(engine), tokens, slack_api_url, session=session),
        passive=PassiveCheck(PreferenceStore(engine), WatchStore(engine)),
    )
    worker = Worker(
        queue,
        processor,
        concurrency=concurrency or settings.worker_concurrency,
        limits=ai_queue_limits(settings),
        lease_ms=settings.job_lease_ms,
        stalled_interval_ms=settings.stalled_check_interval_ms,
        keep_completed=KeepJobs(count=settings.keep_completed),
        keep_failed=KeepJobs(count=settings.keep_failed),
        max_retry_after_ms=settings.job_max_retry_after_s * 1000,
    )
    worker.on("failed", processor.on_failed)
    return worker
