"""Typed job data and result of the ai-responses queue; validated on enqueue and again when a worker runs it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from slack_backend.slack.response_urls import response_url_problem

MAX_TRIGGER_TEXT_CHARS = 4_000
MAX_CONTEXT_MESSAGES = 50
MAX_CONTEXT_TEXT_CHARS = 4_000

_SLACK_ID = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,63}$")
_SLACK_TS = re.compile(r"^\d{1,12}\.\d{1,9}$")
# Control characters other than tab and newlines have no place in a message we send to Slack or the model.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _slack_id(value: str) -> str:
    if not _SLACK_ID.match(value):
        raise ValueError("must be a Slack id (capital letters and digits, like T0123ABCD)")
    return value


def _slack_ts(value: str) -> str:
    if not _SLACK_TS.match(value):
        raise ValueError("must be a Slack timestamp like 1712345678.000100")
    return value


def _clean_text(value: str) -> str:
    return _CONTROL.sub("", value)


def _response_url(value: str) -> str:
    # Loopback passes here (tests, the demo); delivery refuses it unless SLACK_API_URL is loopback too.
    problem = response_url_problem(value, allow_loopback=True)
    if problem is not None:
        raise ValueError(problem)
    return value


SlackId = Annotated[str, AfterValidator(_slack_id)]
SlackTs = Annotated[str, AfterValidator(_slack_ts)]


class TriggerKind(StrEnum):
    """How the user asked: directly (shortcut, slash command, mention, DM) or passively (watched replies)."""

    MESSAGE_ACTION = "message_action"
    SLASH_COMMAND = "slash_command"
    MENTION = "mention"
    DM = "dm"
    REPLY = "reply"
    THREAD = "thread"
    # Passive suggestions in a conversation the user watches: someone mentioned them, replied in a thread they
    # are in, or wrote to them in a DM.
    WATCHED_MENTION = "watched_mention"
    WATCHED_THREAD = "watched_thread"
    WATCHED_DM = "watched_dm"

    @property
    def direct(self) -> bool:
        return self not in _PASSIVE_TRIGGERS


_PASSIVE_TRIGGERS = frozenset(
    {
        TriggerKind.REPLY,
        TriggerKind.THREAD,
        TriggerKind.WATCHED_MENTION,
        TriggerKind.WATCHED_THREAD,
        TriggerKind.WATCHED_DM,
    }
)


class ContextMessageData(BaseModel):
    """One earlier message of the thread, as the model will see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(max_length=64)
    text: Annotated[str, AfterValidator(_clean_text)] = Field(max_length=MAX_CONTEXT_TEXT_CHARS)
    ts: SlackTs


class AIResponseJobData(BaseModel):
    """What a worker needs to draft and deliver a reply: ids and text, never tokens.

    `trigger_text` is the message to reply to. A mention in a thread leaves it empty: the reply answers the thread,
    and the words said with the mention, if any, are the user's `instruction` for the draft ("decline politely").
    Jobs queued before `instruction` existed parse unchanged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace_id: SlackId
    user_id: SlackId
    channel_id: SlackId
    trigger: TriggerKind
    trigger_text: Annotated[str, AfterValidator(_clean_text)] = Field(default="", max_length=MAX_TRIGGER_TEXT_CHARS)
    instruction: Annotated[str, AfterValidator(_clean_text)] | None = Field(
        default=None, min_length=1, max_length=MAX_TRIGGER_TEXT_CHARS
    )
    message_ts: SlackTs | None = None
    thread_ts: SlackTs | None = None
    context_messages: list[ContextMessageData] = Field(default_factory=list, max_length=MAX_CONTEXT_MESSAGES)
    response_url: Annotated[str, AfterValidator(_response_url)] | None = None
    enterprise_id: SlackId | None = None
    # Who wrote the message replied to (a message shortcut), so the model is told whom it answers.
    trigger_user_id: SlackId | None = None
    request_id: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _something_to_answer(self) -> AIResponseJobData:
        # Only a thread gives a reply something to answer besides the trigger text.
        if not self.trigger_text.strip() and self.thread_ts is None:
            raise ValueError("trigger_text is empty and there is no thread to reply to")
        return self

    @property
    def replies_to_thread(self) -> bool:
        """The draft answers the thread itself (a mention in a thread), not a given message."""
        return not self.trigger_text.strip()


class AIResponseJobResult(BaseModel):
    """What a finished job keeps: how the draft was made and delivered (the draft text stays in Slack)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delivered_via: str
    delivery_parts: int
    input_tokens: int
    output_tokens: int
    model: str
    offline: bool
    processing_time_ms: int
    draft_chars: int
