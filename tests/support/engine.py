"""Helpers for engine tests: a queue factory type and a context manager that runs a worker in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from contextlib import asynccontextmanager
from typing import Protocol

from slack_backend.queue import JobDefaults, JobState, Queue, Worker


class QueueFactory(Protocol):
    def __call__(self, name: str = "q", *, defaults: JobDefaults | None = None) -> Queue: ...


@asynccontextmanager
async def running(worker: Worker, *, close_timeout_s: float | None = 10.0) -> AsyncIterator[Worker]:
    """Run `worker` in a task for the block's duration; close it (and surface its errors) at the end."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.close(close_timeout_s)
        await task


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, every_s: float = 0.01) -> None:
    """Poll an async condition until it holds; fail the test with a clear message if it never does."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)


async def finished(queue: Queue, n: int) -> bool:
    """True once at least n jobs are completed or failed."""
    c = await queue.counts()
    return c[JobState.COMPLETED] + c[JobState.FAILED] >= n


def job_in_state(queue: Queue, job_id: str, state: JobState) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        job = await queue.get(job_id)
        return job is not None and job.state is state

    return check


def grown_past(items: Sized, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) > n

    return check
