"""Upper-bound token estimates for ai-responses jobs, reserved against the AI token budget when a job starts."""

from __future__ import annotations

from slack_backend.ai.prompt import SYSTEM_PROMPT, estimate_text_tokens
from slack_backend.jobs.types import AIResponseJobData

# Thread context read for the model: enough to sound right, bounded so one job stays one small prompt.
CONTEXT_MAX_MESSAGES = 30
CONTEXT_MAX_CHARS = 12_000


def estimate_cost(data: AIResponseJobData, max_output_tokens: int) -> int:
    """Tokens one draft can use at most: the prompt, the context (a thread not read yet counts as full), the output.

    An upper bound, so a budget window never settles more than it reserved; completion settles the real use.
    """
    context_chars = sum(len(m.text) for m in data.context_messages)
    if not data.context_messages and data.thread_ts is not None:
        context_chars = CONTEXT_MAX_CHARS
    prompt = SYSTEM_PROMPT + data.trigger_text + (data.instruction or "")
    return estimate_text_tokens(prompt) + min(context_chars, CONTEXT_MAX_CHARS) // 4 + max_output_tokens
