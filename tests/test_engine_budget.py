"""Token budget: reserve a job's estimated tokens at start, settle to actual use, never exceed the window's budget."""

from __future__ import annotations

import random

import pytest

from slack_backend.queue import (
    BulkJob,
    Job,
    JobOptions,
    JobState,
    KeepJobs,
    QueueLimits,
    RetryAfter,
    TokenBudget,
    Worker,
)
from tests.support.engine import QueueFactory, finished, running, wait_until


def window_sums(points: list[tuple[int, int]], window_ms: int) -> list[int]:
    """For each start time t, the tokens settled by starts inside [t, t + window_ms)."""
    points = sorted(points)
    return [sum(cost for s, cost in points if t <= s < t + window_ms) for t, _ in points]


@pytest.mark.parametrize(
    ("budget", "window_ms", "job_tokens", "jobs"),
    [
        pytest.param(2_000, 3_000, 200, 40, id="scaled-2k-per-3s"),
        pytest.param(
            20_000, 60_000, 2_000, 25, id="issue-20k-per-min", marks=[pytest.mark.slow, pytest.mark.timeout(300)]
        ),
    ],
)
async def test_budget_is_never_exceeded_and_well_used(
    make_queue: QueueFactory, budget: int, window_ms: int, job_tokens: int, jobs: int
) -> None:
    """No window settles more than the budget, and while there is a backlog at least 90% of it is used."""
    queue = make_queue()
    rng = random.Random(7)
    estimates = [rng.randint(int(job_tokens * 0.9), job_tokens) for _ in range(jobs)]
    await queue.add_bulk([BulkJob("ai", {"est": e}, JobOptions(cost=e)) for e in estimates])

    async def processor(job: Job) -> None:
        # The estimate is an upper bound (prompt + max output); real use is a little less.
        job.cost_used = job.cost - rng.randint(0, job.cost // 20)

    worker = Worker(
        queue,
        processor,
        concurrency=50,
        limits=QueueLimits(budget=TokenBudget(budget, window_ms)),
        keep_completed=KeepJobs(count=None),
    )
    async with running(worker):
        await wait_until(lambda: finished(queue, jobs), timeout_s=window_ms / 1000 * (jobs * job_tokens / budget + 2))
    done = await queue.get_jobs(JobState.COMPLETED)
    points = [(j.processed_ms or 0, j.cost_used or 0) for j in done]
    assert len(points) == jobs
    assert all(j.cost_used is not None and j.cost_used <= j.cost for j in done)
    sums = window_sums(points, window_ms)
    last_start = max(t for t, _ in points)
    # Windows that lie wholly within the backlog (they end before the last job started).
    busy = [s for (t, _), s in zip(sorted(points), sums, strict=True) if t + window_ms <= last_start]
    utilisation = sum(busy) / (len(busy) * budget) if busy else 0.0
    print(f"\nbudget {budget}/{window_ms} ms: max window {max(sums)}, utilisation {utilisation:.1%} over {len(busy)}")
    assert max(sums) <= budget
    assert busy, "the run must hold a backlog for more than one window"
    assert utilisation >= 0.90
    assert worker.stats.budget_waits > 0


async def test_released_job_gives_its_reservation_back(make_queue: QueueFactory) -> None:
    """A run ended by RetryAfter spent nothing: its reservation is returned and the next job may use it."""
    queue = make_queue()
    await queue.set_limits(QueueLimits(budget=TokenBudget(1_000, 60_000)))
    first = await queue.add("a", {}, cost=800)
    runs: list[str] = []

    async def processor(job: Job) -> None:
        runs.append(job.id)
        if len(runs) == 1:
            raise RetryAfter(0.2)
        job.cost_used = 500

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 1), timeout_s=5)
    assert runs == [first.job_id, first.job_id]
    assert await queue.budget_used() == 500
