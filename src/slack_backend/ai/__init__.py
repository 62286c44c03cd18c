"""Claude generation: prompt, client, error classification, token accounting; no Redis, no Slack."""

from slack_backend.ai.client import ClaudeDrafter
from slack_backend.ai.errors import (
    AIFailure,
    AIRejectedError,
    TransientAIError,
    classify,
    failure_of,
    user_message,
)
from slack_backend.ai.offline import OFFLINE_LABEL, OfflineDrafter, make_drafter
from slack_backend.ai.prompt import SYSTEM_PROMPT, build_messages, estimate_input_tokens, select_context
from slack_backend.ai.ratelimit_headers import LimitWindow, RateLimitSnapshot
from slack_backend.ai.types import ContextMessage, Draft, Drafter, DraftRequest, Voice

__all__ = [
    "OFFLINE_LABEL",
    "SYSTEM_PROMPT",
    "AIFailure",
    "AIRejectedError",
    "ClaudeDrafter",
    "ContextMessage",
    "Draft",
    "DraftRequest",
    "Drafter",
    "LimitWindow",
    "OfflineDrafter",
    "RateLimitSnapshot",
    "TransientAIError",
    "Voice",
    "build_messages",
    "classify",
    "estimate_input_tokens",
    "failure_of",
    "make_drafter",
    "select_context",
    "user_message",
]
