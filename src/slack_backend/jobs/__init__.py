"""The app's jobs on the engine: typed job data, the ai-responses queue, and its processor."""

from importlib import import_module
from typing import TYPE_CHECKING

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
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

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


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
