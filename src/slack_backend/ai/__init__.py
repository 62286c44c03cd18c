"""Claude generation: prompt, client, error classification, token accounting; no Redis, no Slack."""

from typing import TYPE_CHECKING

from slack_backend.queue._lazy import lazy_exports

if TYPE_CHECKING:
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

# Each name loads its module on first use (PEP 562): the command line's light commands and the settings import a
# submodule without paying for the whole package (docs/performance.md, "Start-up").
_MODULES: dict[str, tuple[str, ...]] = {
    "slack_backend.ai.client": ("ClaudeDrafter",),
    "slack_backend.ai.errors": (
        "AIFailure",
        "AIRejectedError",
        "TransientAIError",
        "classify",
        "failure_of",
        "user_message",
    ),
    "slack_backend.ai.offline": ("OFFLINE_LABEL", "OfflineDrafter", "make_drafter"),
    "slack_backend.ai.prompt": ("SYSTEM_PROMPT", "build_messages", "estimate_input_tokens", "select_context"),
    "slack_backend.ai.ratelimit_headers": ("LimitWindow", "RateLimitSnapshot"),
    "slack_backend.ai.types": ("ContextMessage", "Draft", "Drafter", "DraftRequest", "Voice"),
}

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

__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)
