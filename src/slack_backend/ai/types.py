"""The values the AI layer takes and gives: a draft request, the draft, and the Drafter protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from slack_backend.ai.ratelimit_headers import RateLimitSnapshot


@dataclass(frozen=True, slots=True)
class ContextMessage:
    """One earlier message of the conversation: who wrote it, what it says, and its Slack ts."""

    user_id: str
    text: str
    ts: str


@dataclass(frozen=True, slots=True)
class Voice:
    """How the requester wants their drafts to sound (App Home), and examples of how they write (with consent).

    Every field is optional: an empty Voice adds nothing to the prompt.
    """

    tone: str | None = None
    length: str | None = None
    language: str | None = None
    custom_instructions: str | None = None
    signature: str | None = None
    style_examples: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return (
            not (self.tone or self.length or self.language or self.custom_instructions or self.signature)
            and not self.style_examples
        )


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """What to draft a reply to: the trigger message, its context (oldest first), and who asked.

    An empty `trigger_text` means "reply to the thread" (its newest message not by the requester); `instruction`
    is what the requester asked for the draft in their own words, when they said anything. `names`, `now` and
    `trigger_user_id` tell the model who wrote what and what day it is; `voice` holds their saved preferences and
    style examples.
    """

    trigger_text: str
    context: tuple[ContextMessage, ...]
    requester_user_id: str
    instruction: str | None = None
    # Display names by user id (users.info); anyone missing is shown by id.
    names: Mapping[str, str] = field(default_factory=dict)
    # Now, in the requester's time zone when Slack told us it (else UTC): the model is told today's date.
    now: datetime | None = None
    # Who wrote `trigger_text` (a message shortcut), when known.
    trigger_user_id: str | None = None
    # A refine: the current draft the instruction applies to (its own tag, so a long draft is not clipped with it).
    previous_draft: str | None = None
    voice: Voice | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """A drafted reply with its token usage; `offline` marks a placeholder made without calling the AI, and
    `cut_short` a reply the model stopped at its output cap (max_tokens)."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str
    offline: bool = False
    rate_limits: RateLimitSnapshot | None = None
    cut_short: bool = False


class Drafter(Protocol):
    """Anything that turns a DraftRequest into a Draft: the Claude client, or the offline stand-in."""

    async def draft(self, request: DraftRequest) -> Draft:
        """Draft a reply; raises the engine's RetryAfter / UnrecoverableError, or a transient error."""
        ...

    async def estimate_tokens(self, request: DraftRequest) -> int:
        """A cheap upper estimate of the tokens one draft will use (input plus the output cap), no network."""
        ...

    async def aclose(self) -> None:
        """Release connections; the drafter is not used afterwards."""
        ...
