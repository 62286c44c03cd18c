"""Engine basics on a real Redis: add, fetch, complete, dedup, priorities, delays, counts."""

from __future__ import annotations

import asyncio
import time

import pytest

from slack_backend.queue import InvalidJobDataError, Job, JobState, Worker
from tests.support.engine import QueueFactory, finished, grown_past, job_in_state, running, wait_until


async def test_job_runs_and_completes_with_result(make_queue: QueueFactory) -> None:
    """A job added to the queue is run by a worker and kept as completed with its result."""
    queue = make_queue()
    added = await queue.add("echo", {"n": 1})

    async def processor(job: Job) -> dict[str, int]:
        return {"double": job.data["n"] * 2}

    async with running(Worker(queue, processor)):
        await wait_until(job_in_state(queue, added.job_id, JobState.COMPLETED))
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.result == {"double": 2}
    assert job.attempts_made == 1
    assert (await queue.counts())[JobState.COMPLETED] == 1


async def test_add_with_same_job_id_is_idempotent(make_queue: QueueFactory) -> None:
    """Adding a job id that is already kept creates nothing and keeps the first data."""
    queue = make_queue()
    first = await queue.add("x", {"v": 1}, job_id="Ev123")
    second = await queue.add("x", {"v": 2}, job_id="Ev123")
    assert first.created
    assert not second.created
    assert first.job_id == second.job_id == "Ev123"
    job = await queue.get("Ev123")
    assert job is not None
    assert job.data == {"v": 1}
    assert (await queue.counts())[JobState.WAITING] == 1


async def test_priorities_then_fifo(make_queue: QueueFactory) -> None:
    """Lower priority numbers start first; a job without priority takes the default; FIFO within a priority."""
    queue = make_queue()
    await queue.add("j", "none-a")
    await queue.add("j", "p10", priority=10)
    await queue.add("j", "none-b")
    await queue.add("j", "p1", priority=1)
    await queue.add("j", "p1b", priority=1)
    await queue.add("j", "p5000", priority=5000)
    order: list[str] = []

    async def processor(job: Job) -> None:
        order.append(job.data)

    async with running(Worker(queue, processor, concurrency=1)):
        await wait_until(lambda: finished(queue, 6))
    assert order == ["p1", "p1b", "p10", "none-a", "none-b", "p5000"]


async def test_delayed_job_starts_on_time(make_queue: QueueFactory) -> None:
    """A delayed job never starts early and starts within 200 ms of its due time, with an idle worker blocked."""
    queue = make_queue()
    started: list[float] = []

    async def processor(job: Job) -> None:
        started.append(time.monotonic())

    async with running(Worker(queue, processor)):
        await asyncio.sleep(0.2)  # the worker is idle and blocked on Redis
        for delay_ms in (300, 1200):  # under and over a second: both are worker-side deadlines within idle_block_s
            t0 = time.monotonic()
            await queue.add("d", {}, delay_ms=delay_ms)
            await wait_until(grown_past(started, len(started)), timeout_s=5)
            lateness_ms = (started[-1] - t0) * 1000 - delay_ms
            # t0 is read before the add, so an on-time start is >= 0 (5 ms for Redis's whole-ms due time). The worker
            # sleeps to the due time; 200 ms covers a timer woken late on a loaded 2-core machine, while a worker that
            # missed the due time would wait for its next idle poll (idle_block_s, 5 s).
            assert -5 <= lateness_ms <= 200, f"delay {delay_ms} ms started {lateness_ms:.1f} ms late"


async def test_invalid_data_is_refused_and_nothing_written(make_queue: QueueFactory) -> None:
    """Data that is not JSON, bad ids or bad options raise InvalidJobDataError and write nothing."""
    queue = make_queue()
    with pytest.raises(InvalidJobDataError):
        await queue.add("x", {"bad": {1, 2}})
    with pytest.raises(InvalidJobDataError):
        await queue.add("x", {}, job_id="a\0b")
    with pytest.raises(InvalidJobDataError):
        await queue.add("x", {}, job_id="123")
    with pytest.raises(InvalidJobDataError):
        await queue.add("x", {}, priority=0)
    with pytest.raises(InvalidJobDataError):
        await queue.add("x", float("nan"))
    assert await queue.redis.keys(f"{queue.keys.tag}*") == []
