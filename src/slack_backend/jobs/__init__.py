"""The app's jobs on the engine: typed job data, the ai-responses queue, and its processor."""

from typing import TYPE_CHECKING

from slack_backend.queue._lazy import lazy_exports

if TYPE_CHECKING:
    from slack_backend.jobs.queues import (
        AI_RESPONSES_QUEUE,
        DIRECT_PRIORITY,
        PASSIVE_PRIORITY,
        ai_responses_queue,
        queue_ai_response,
    )
    from slack_backend.jobs.types import AIResponseJobData, AIResponseJobResult, ContextMessageData, TriggerKind

# Each name loads its module on first use (PEP 562): the command line's light commands and the settings import a
# submodule without paying for the whole package (docs/performance.md, "Start-up").
_MODULES: dict[str, tuple[str, ...]] = {
    "slack_backend.jobs.queues": (
        "AI_RESPONSES_QUEUE",
        "DIRECT_PRIORITY",
        "PASSIVE_PRIORITY",
        "ai_responses_queue",
        "queue_ai_response",
    ),
    "slack_backend.jobs.types": ("AIResponseJobData", "AIResponseJobResult", "ContextMessageData", "TriggerKind"),
}

__all__ = [
    "AI_RESPONSES_QUEUE",
    "DIRECT_PRIORITY",
    "PASSIVE_PRIORITY",
    "AIResponseJobData",
    "AIResponseJobResult",
    "ContextMessageData",
    "TriggerKind",
    "ai_responses_queue",
    "queue_ai_response",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)
