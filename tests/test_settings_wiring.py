"""Settings reach the engine: WORKSPACE_CONCURRENCY and AI_TOKENS_PER_MINUTE become the ai-responses queue's limits,
and the fake model sees their effect (the order in which model calls arrive, not the engine's own bookkeeping)."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_backend.jobs import queue_ai_response
from slack_backend.jobs.cost import estimate_cost
from slack_backend.jobs.types import AIResponseJobData
from slack_backend.queue import JobState, Queue, QueueLimits, RateLimit, TokenBudget
from tests.fakes.anthropic_server import Behaviour, FakeAnthropic
from tests.support.engine import wait_until
from tests.support.pipeline import PipelineFactory

MAX_OUTPUT_TOKENS = 1000


def job_data(workspace: str, text: str) -> dict[str, Any]:
    return {
        "workspace_id": workspace,
        "user_id": "U0WIRE01",
        "channel_id": "C0WIRE01",
        "trigger": "mention",
        "trigger_text": text,
        "message_ts": "1700000001.000100",
    }


async def requests_reach(claude: FakeAnthropic, n: int) -> None:
    async def arrived() -> bool:
        return len(claude.message_requests) >= n

    await wait_until(arrived, timeout_s=15, every_s=0.02)


def texts(claude: FakeAnthropic) -> list[str]:
    return [str(r.body["messages"]) for r in claude.message_requests]


async def state(queue: Queue, job_id: str) -> JobState | None:
    job = await queue.get(job_id)
    return None if job is None else job.state


async def test_workspace_concurrency_and_token_budget_become_the_queue_limits(pipeline: PipelineFactory) -> None:
    """WORKSPACE_CONCURRENCY=2 and AI_TOKENS_PER_MINUTE=50000 are stored as the queue's group cap and 60 s budget."""
    # Starts run at twice the call rate (50/s here); the call gate holds the limit at the model call.
    expected = QueueLimits(rate=RateLimit(100, 1000), group_concurrency=2, budget=TokenBudget(50_000, 60_000))
    async with pipeline(WORKSPACE_CONCURRENCY="2", AI_TOKENS_PER_MINUTE="50000") as p:

        async def stored() -> bool:  # the worker writes them as it starts
            return await p.queue.limits() == expected

        await wait_until(stored, timeout_s=10, every_s=0.05)


async def test_workspace_concurrency_1_holds_a_workspaces_second_job_not_anothers(pipeline: PipelineFactory) -> None:
    """WORKSPACE_CONCURRENCY=1: while A's first job is in its model call, B's job reaches the model and A's second
    does not, though A's second was queued before B's."""
    async with pipeline(WORKSPACE_CONCURRENCY="1") as p:
        p.claude.script(Behaviour.hang(3.0))
        a1 = (await queue_ai_response(p.queue, job_data("T0WIREA", "job A1"))).job_id
        await requests_reach(p.claude, 1)
        await queue_ai_response(p.queue, job_data("T0WIREA", "job A2"))
        await queue_ai_response(p.queue, job_data("T0WIREB", "job B1"))
        await requests_reach(p.claude, 2)
        assert await state(p.queue, a1) is JobState.ACTIVE, "A1 still runs, so A holds its one slot"
        assert "job B1" in texts(p.claude)[1]
        await requests_reach(p.claude, 3)
    assert "job A2" in texts(p.claude)[2]


async def test_ai_tokens_per_minute_keeps_a_second_job_out_while_the_first_holds_the_budget(
    pipeline: PipelineFactory,
) -> None:
    """AI_TOKENS_PER_MINUTE fitting one job's estimate: while the first job runs, the second never reaches the model."""
    one_job = estimate_cost(AIResponseJobData.model_validate(job_data("T0WIREA", "job 1")), MAX_OUTPUT_TOKENS)
    budget = one_job * 3 // 2  # one reservation fits, two do not
    async with pipeline(AI_TOKENS_PER_MINUTE=str(budget), AI_MAX_TOKENS=str(MAX_OUTPUT_TOKENS)) as p:
        p.claude.script(Behaviour.hang(2.0))
        first = (await queue_ai_response(p.queue, job_data("T0WIREA", "job 1"))).job_id
        await requests_reach(p.claude, 1)
        second = (await queue_ai_response(p.queue, job_data("T0WIREB", "job 2"))).job_id
        # Half a second with the first job still in its model call: rate (50/s) and slots (5) would start the
        # second at once; only the budget keeps it out.
        await asyncio.sleep(0.5)
        assert await state(p.queue, first) is JobState.ACTIVE
        assert len(p.claude.message_requests) == 1
        assert await state(p.queue, second) is JobState.WAITING
        # Not asserted: when the second starts after the first settles. Today it waits for the budget window to
        # roll (up to 60 s) even though the settled use leaves room (reported to the engine's owners).
