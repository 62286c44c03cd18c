"""Refine and Regenerate: jobs on the ai-responses queue that redraft a saved suggestion and update its card."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from slack_backend.ai import DraftRequest
from slack_backend.ai.prompt import MAX_DRAFT_CHARS, SYSTEM_PROMPT, estimate_text_tokens
from slack_backend.jobs.context import Conversation, local_now
from slack_backend.jobs.cost import CONTEXT_MAX_CHARS
from slack_backend.jobs.queues import DIRECT_PRIORITY
from slack_backend.jobs.types import (
    MAX_TRIGGER_TEXT_CHARS,
    AIResponseJobData,
    SlackId,
    TriggerKind,
    _clean_text,
    _response_url,
)
from slack_backend.jobs.while_calling import WhileCalling
from slack_backend.logging import get_logger
from slack_backend.queue import AddResult, InvalidJobDataError, Job, JobEvent, Queue, UnrecoverableError
from slack_backend.slack.card import CardDraft, card_message, note_message
from slack_backend.store import CardStart, Suggestion, SuggestionStore
from slack_backend.store.db import utc_now

if TYPE_CHECKING:
    from slack_backend.jobs.workers import AIResponseProcessor

log = get_logger(__name__)

REFINE_JOB = "card-refine"
REGENERATE_JOB = "card-regenerate"
CARD_JOB_NAMES = frozenset({REFINE_JOB, REGENERATE_JOB})
MAX_INSTRUCTION_CHARS = 1_000

GONE_TEXT = "This draft is gone: drafts are kept for a limited time. Ask me for a new one."
ALREADY_SENT_TEXT = "This draft was already sent, so it can't be changed."
NOT_YOURS_TEXT = "Only the person this draft was written for can use its buttons."

CardJobKind = Literal["refine", "regenerate"]


class CardJobData(BaseModel):
    """A Refine or Regenerate of one suggestion: ids, the card's response_url and the instruction, never text
    of the draft or tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CardJobKind
    suggestion_id: str = Field(min_length=1, max_length=255)
    workspace_id: SlackId
    user_id: SlackId
    channel_id: SlackId
    enterprise_id: SlackId | None = None
    instruction: Annotated[str, AfterValidator(_clean_text)] | None = Field(
        default=None, min_length=1, max_length=MAX_INSTRUCTION_CHARS
    )
    response_url: Annotated[str, AfterValidator(_response_url)] | None = None
    request_id: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _refine_says_how(self) -> CardJobData:
        if self.kind == "refine" and not (self.instruction or "").strip():
            raise ValueError("a refine needs an instruction")
        return self


@dataclass(frozen=True, slots=True)
class CardRecipient:
    """Where a card job answers (delivery's Recipient): the card's response_url, else an ephemeral message."""

    workspace_id: str
    user_id: str
    channel_id: str
    thread_ts: str | None
    response_url: str | None
    request_id: str | None
    message_ts: str | None = None
    # Not a request kind delivery knows: no reaction, and a failure note replaces nothing.
    trigger: str = "card"


def card_job_cost(data: CardJobData, max_output_tokens: int) -> int:
    """An upper bound of one redraft's tokens: prompt, source message, thread (regenerate), earlier draft, output."""
    prompt = estimate_text_tokens(SYSTEM_PROMPT + (data.instruction or "")) + MAX_TRIGGER_TEXT_CHARS // 4
    prompt += MAX_DRAFT_CHARS // 4 if data.kind == "refine" else 0
    context = CONTEXT_MAX_CHARS // 4 if data.kind == "regenerate" else 0
    return prompt + context + max_output_tokens


async def queue_card_job(
    queue: Queue, data: CardJobData | dict[str, Any], *, job_id: str, max_output_tokens: int
) -> AddResult:
    """Validate and enqueue a refine/regenerate as a direct request of its workspace (same limits as a draft).

    Raises InvalidJobDataError, with nothing written, when the data is invalid.
    """
    try:
        valid = data if isinstance(data, CardJobData) else CardJobData.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors())
        raise InvalidJobDataError(f"invalid card job data: {problems}") from exc
    return await queue.add(
        REFINE_JOB if valid.kind == "refine" else REGENERATE_JOB,
        valid.model_dump(mode="json", exclude_none=True),
        job_id=job_id,
        priority=DIRECT_PRIORITY,
        group=valid.workspace_id,
        cost=card_job_cost(valid, max_output_tokens),
    )


def parse_card_job_data(job: Job) -> CardJobData:
    """The job's data; invalid data can never succeed, so it fails the job at once."""
    try:
        return CardJobData.model_validate(job.data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "data" for e in exc.errors())
        raise UnrecoverableError(f"invalid card job data ({fields})") from exc


def card_for(suggestion: Suggestion, *, notes: tuple[str, ...] = ()) -> CardDraft:
    """What the card of a saved suggestion shows."""
    replies_to = suggestion.source_text if (suggestion.source_text or "").strip() else None
    return CardDraft(
        suggestion_id=suggestion.id,
        text=suggestion.text,
        offline=suggestion.offline,
        cut_short=suggestion.cut_short,
        replies_to=replies_to,
        revision=suggestion.revision,
        notes=notes,
    )


def refine_instruction(instruction: str) -> str:
    """What the model is asked for a refine (the draft itself goes in the request's `previous_draft`)."""
    return (
        f"Rewrite my current draft (in <draft>) as I ask: {instruction}\n"
        "Keep its facts and meaning unless I ask otherwise, and output only the new draft."
    )


class CardRefusedError(UnrecoverableError):
    """The card cannot be changed (gone, sent, not the user's): said in plain words, never retried."""

    def __init__(self, text: str, *, replace_card: bool) -> None:
        self.text = text
        self.replace_card = replace_card
        super().__init__(text)


class CardJobProcessor:
    """Runs refine and regenerate jobs with the draft processor's model, delivery, tokens, quota and context.

    Work is done once: the revision is saved under the job's id before the card is replaced, so a rerun replaces
    the card with the saved revision and never calls the model again.
    """

    def __init__(self, processor: AIResponseProcessor, suggestions: SuggestionStore) -> None:
        self._p = processor
        self._suggestions = suggestions

    async def __call__(self, job: Job) -> dict[str, Any]:
        started = time.monotonic()
        data = parse_card_job_data(job)
        structlog.contextvars.bind_contextvars(workspace=data.workspace_id)
        quota = self._p._quota
        now, day_start = quota.today() if quota is not None else (utc_now(), utc_now())
        # The draft, this job's saved revision and the workspace's quota use: one read (four statements before).
        start = await self._suggestions.card_start(data.suggestion_id, job.id, data.workspace_id, since=day_start)
        suggestion = start.suggestion
        if suggestion is None:
            raise CardRefusedError(GONE_TEXT, replace_card=True)
        if suggestion.user_id != data.user_id or suggestion.workspace_id != data.workspace_id:
            raise CardRefusedError(NOT_YOURS_TEXT, replace_card=False)
        source = _source(suggestion, data)
        # Audited like a draft: the workspace's daily quota counts the tokens every refine and regenerate used. The
        # start row is written while the model call is in flight, and before anything finishes it (as a draft's).
        audit = WhileCalling(lambda: self._p._audit_started(job, source))
        # As a draft's: whether this job replaced the card already, read while the model thinks.
        posted = WhileCalling(lambda: self._p.delivered_before(job.id))
        try:
            return await self._revise_and_replace(job, data, start, suggestion, source, (audit, posted), now, started)
        finally:
            posted.drop()
            await audit.done()

    async def _revise_and_replace(
        self,
        job: Job,
        data: CardJobData,
        start: CardStart,
        suggestion: Suggestion,
        source: AIResponseJobData,
        during_call: tuple[WhileCalling[None], WhileCalling[bool | None]],
        now: datetime,
        started: float,
    ) -> dict[str, Any]:
        """From the start read on: the revision (saved, or drafted now under the quota), then the card replaced."""
        audit, posted = during_call
        delivered_before: bool | None = None
        quota = self._p._quota
        token = await self._p._token(source)
        recipient = _recipient(data, suggestion)
        done = start.revision
        if done is not None:
            job.cost_used = 0
            used = (done.input_tokens, done.output_tokens)
        else:
            if suggestion.sent_at is not None:
                raise CardRefusedError(ALREADY_SENT_TEXT, replace_card=False)
            if quota is not None:
                verdict = quota.judge(start.daily_tokens, start.tokens_used, now)
                if not verdict.allowed:
                    await self._p._delivery.tell_failure(recipient, token, verdict.user_text())
                    job.cost_used = 0
                    await audit.done()
                    await self._p._audit_finished(job.id, "completed", 0, 0, "over_quota")
                    return {"delivered_via": "quota_notice", "revised": False}
            suggestion, used = await self._redraft(job, data, suggestion, source, token, during_call)
            delivered_before = await posted.done()
        receipt = await self._p._delivery.replace_card(
            job.id, recipient, token, card_message(card_for(suggestion)), delivered_before=delivered_before
        )
        await audit.done()
        await self._p._audit_finished(job.id, "completed", used[0], used[1], None)
        return {
            "delivered_via": receipt.via,
            "revised": True,
            "revision": suggestion.revision,
            "processing_time_ms": int((time.monotonic() - started) * 1000),
        }

    async def _redraft(
        self,
        job: Job,
        data: CardJobData,
        suggestion: Suggestion,
        source: AIResponseJobData,
        token: str,
        during_call: tuple[WhileCalling[None], WhileCalling[bool | None]],
    ) -> tuple[Suggestion, tuple[int, int]]:
        """The draft with its new revision, and the (input, output) tokens the model call used."""
        if data.kind == "refine":
            conversation = Conversation()
            instruction: str | None = refine_instruction(data.instruction or "")
            previous: str | None = suggestion.text
        else:
            conversation = await self._p._context_reader.read(source, token)
            instruction, previous = suggestion.instruction, None
        request = DraftRequest(
            trigger_text=source.trigger_text,
            context=conversation.messages,
            requester_user_id=data.user_id,
            instruction=instruction,
            previous_draft=previous,
            names=conversation.names,
            now=local_now(self._p._clock(), conversation.tz),
            trigger_user_id=source.trigger_user_id,
        )
        audit, posted = during_call
        with audit.call(), posted.call():
            draft = await self._p._drafter.draft(request)
        job.cost_used = draft.input_tokens + draft.output_tokens
        await self._p._respect_provider_limits(draft)
        revised = await self._suggestions.revise(
            suggestion.id,
            job.id,
            kind=data.kind,
            instruction=data.instruction,
            text=draft.text,
            model=draft.model,
            input_tokens=draft.input_tokens,
            output_tokens=draft.output_tokens,
            cut_short=draft.cut_short,
        )
        if revised is None:
            raise CardRefusedError(GONE_TEXT, replace_card=True)
        if revised.sent_at is not None and revised.revision != suggestion.revision + 1:
            raise CardRefusedError(ALREADY_SENT_TEXT, replace_card=False)
        return revised, (draft.input_tokens, draft.output_tokens)

    async def on_failed(self, event: JobEvent) -> None:
        """A card job failed for good: say so in plain words on the card (replacing it when the draft is gone)."""
        if event.job is None or not event.final:
            return
        try:
            data = parse_card_job_data(event.job)
        except UnrecoverableError:
            return
        suggestion = await self._suggestions.get(data.suggestion_id)
        recipient = _recipient(data, suggestion)
        token = ""
        try:
            token = await self._p._token(_source(suggestion, data)) if suggestion is not None else ""
        except Exception as exc:  # the failure note is best effort
            log.warning("card job failure: no token to tell the user", error=type(exc).__name__)
        error = event.error
        await self._p._audit_finished(
            event.job.id, "failed", 0, 0, type(error).__name__.lower()[:64] if error else None
        )
        if isinstance(error, CardRefusedError) and error.replace_card and recipient.response_url:
            try:
                await self._p._delivery.respond(recipient.response_url, _replacement(error.text))
                return
            except Exception as exc:  # fall back to a note below
                log.warning("card job failure: card not replaced", error=type(exc).__name__)
        text = error.text if isinstance(error, CardRefusedError) else _plain_reason(error)
        await self._p._delivery.tell_failure(recipient, token, text)


def _replacement(text: str) -> dict[str, Any]:
    message = note_message(text)
    return {"response_type": "ephemeral", "replace_original": True, "text": message.text, "blocks": message.blocks}


def _plain_reason(error: BaseException | None) -> str:
    # The draft processor's wording for model and Slack errors; the card itself stays as it was.
    from slack_backend.jobs.workers import _reason_for_user

    return f"Sorry, I couldn't change the draft: {_reason_for_user(error)}"


def _source(suggestion: Suggestion, data: CardJobData) -> AIResponseJobData:
    """The suggestion's original request, as the draft processor reads one (for tokens and the thread)."""
    try:
        trigger = TriggerKind(suggestion.trigger or TriggerKind.MESSAGE_ACTION)
    except ValueError:
        trigger = TriggerKind.MESSAGE_ACTION
    return AIResponseJobData(
        workspace_id=suggestion.workspace_id,
        user_id=suggestion.user_id,
        channel_id=suggestion.channel_id,
        enterprise_id=data.enterprise_id,
        trigger=trigger,
        trigger_text=(suggestion.source_text or "")[:MAX_TRIGGER_TEXT_CHARS],
        message_ts=suggestion.source_ts,
        thread_ts=suggestion.thread_ts,
        request_id=data.request_id,
    )


def _recipient(data: CardJobData, suggestion: Suggestion | None) -> CardRecipient:
    return CardRecipient(
        workspace_id=data.workspace_id,
        user_id=data.user_id,
        channel_id=suggestion.channel_id if suggestion is not None else data.channel_id,
        thread_ts=suggestion.thread_ts if suggestion is not None else None,
        response_url=data.response_url,
        request_id=data.request_id,
    )
