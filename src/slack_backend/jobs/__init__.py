"""The app's jobs on the engine: typed job data, the ai-responses queue, and its processor."""

from slack_backend.jobs.queues import (
    AI_RESPONSES_QUEUE,
    DIRECT_PRIORITY,
    PASSIVE_PRIORITY,
    ai_responses_queue,
    queue_ai_response,
)
from slack_backend.jobs.types import AIResponseJobData, AIResponseJobResult, ContextMessageData, TriggerKind

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
