"""The ai-responses queue: its defaults from the settings, and `queue_ai_response` to enqueue one request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slack_backend.queue import AddResult, Backoff, InvalidJobDataError, JobDefaults, Queue

if TYPE_CHECKING:
    # The job data's model and cost estimate load with the first enqueue: `slack-backend jobs ...` needs the queue's
    # settings only (docs/performance.md, round 3).
    from slack_backend.config import Settings
    from slack_backend.jobs.types import AIResponseJobData
    from slack_backend.queue.connection import RedisClient

AI_RESPONSES_QUEUE = "ai-responses"
JOB_NAME = "ai-response"
# A direct request (shortcut, slash command, mention) goes before passive work of the same workspace.
DIRECT_PRIORITY = 10
PASSIVE_PRIORITY = 100
DEFAULT_MAX_OUTPUT_TOKENS = 1024


def ai_responses_queue(redis: RedisClient, settings: Settings) -> Queue:
    """The queue with the configured attempts and exponential backoff (defaults: 4 attempts, 2 s, 4 s, 8 s)."""
    defaults = JobDefaults(
        attempts=settings.job_attempts,
        backoff=Backoff("exponential", settings.job_backoff_ms),
        priority=PASSIVE_PRIORITY,
    )
    return Queue(
        AI_RESPONSES_QUEUE,
        connection=redis,
        prefix=settings.redis_prefix,
        defaults=defaults,
        dedup_ttl_ms=settings.job_dedup_ttl_s * 1000,
        min_replicas_ack=settings.redis_min_replicas_ack,
        replicas_ack_timeout_ms=settings.redis_replicas_ack_timeout_ms,
    )


def validate_job_data(data: AIResponseJobData | Mapping[str, Any]) -> AIResponseJobData:
    """Validate job data; raises InvalidJobDataError naming each bad field."""
    from pydantic import ValidationError

    from slack_backend.jobs.types import AIResponseJobData

    if isinstance(data, AIResponseJobData):
        return data
    try:
        return AIResponseJobData.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors())
        raise InvalidJobDataError(f"invalid ai-response job data: {problems}") from exc


async def queue_ai_response(
    queue: Queue,
    data: AIResponseJobData | Mapping[str, Any],
    *,
    job_id: str | None = None,
    priority: int | None = None,
    delay_ms: int = 0,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
) -> AddResult:
    """Validate and enqueue one AI response request in its workspace's group.

    `job_id` (the Slack event_id or trigger_id) makes Slack's retries and duplicate deliveries add nothing.
    The job's cost (an upper-bound token estimate) is what the AI token budget reserves when it starts.
    Raises InvalidJobDataError, with nothing written, when the data is invalid.
    """
    from slack_backend.jobs.cost import estimate_cost

    valid = validate_job_data(data)
    if priority is None:
        priority = DIRECT_PRIORITY if valid.trigger.direct else PASSIVE_PRIORITY
    return await queue.add(
        JOB_NAME,
        valid.model_dump(mode="json", exclude_none=True),
        job_id=job_id,
        priority=priority,
        delay_ms=delay_ms,
        group=valid.workspace_id,
        cost=estimate_cost(valid, max_output_tokens),
    )
