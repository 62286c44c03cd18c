"""Event hooks: sync and async hooks run; a hook that raises is logged and changes no job state."""

from __future__ import annotations

import gc
import weakref

import pytest
import structlog

from slack_backend.queue import Job, JobEvent, JobState, UnrecoverableError, Worker
from slack_backend.queue.events import EventName, Hooks
from tests.support.engine import QueueFactory, finished, running, wait_until


async def test_sync_and_async_hooks_run_and_a_raising_hook_harms_nothing(make_queue: QueueFactory) -> None:
    """Sync and async hooks see completed/failed/progress; a raising hook is logged and every job still ends right."""
    queue = make_queue()
    ok = await queue.add("ok", {"fail": False})
    bad = await queue.add("bad", {"fail": True}, attempts=1)
    seen: list[tuple[str, str]] = []

    async def processor(job: Job) -> str:
        await job.update_progress({"pct": 50})
        if job.data["fail"]:
            raise UnrecoverableError("nope")
        return "fine"

    def sync_hook(event: JobEvent) -> None:
        assert event.job is not None
        seen.append(("sync-" + event.name, event.job.id))

    async def async_hook(event: JobEvent) -> None:
        assert event.job is not None
        seen.append(("async-" + event.name, event.job.id))

    def raising_hook(event: JobEvent) -> None:
        raise ValueError("a broken listener")

    worker = Worker(queue, processor)
    names: tuple[EventName, ...] = ("completed", "failed", "progress")
    for name in names:
        worker.on(name, raising_hook)
        worker.on(name, sync_hook)
        worker.on(name, async_hook)
    with structlog.testing.capture_logs() as logs:
        async with running(worker):
            await wait_until(lambda: finished(queue, 2))
    assert ("sync-completed", ok.job_id) in seen
    assert ("async-completed", ok.job_id) in seen
    assert ("sync-failed", bad.job_id) in seen
    assert ("async-failed", bad.job_id) in seen
    assert ("async-progress", ok.job_id) in seen
    assert sum(1 for entry in logs if entry["event"] == "event hook raised") == 4
    ok_job, bad_job = await queue.get(ok.job_id), await queue.get(bad.job_id)
    assert ok_job is not None
    assert bad_job is not None
    assert ok_job.state is JobState.COMPLETED
    assert ok_job.result == "fine"
    assert ok_job.progress == {"pct": 50}
    assert bad_job.state is JobState.FAILED


def test_unknown_event_name_is_refused() -> None:
    """Listening to an event that does not exist is an error, not a silent no-op."""

    with pytest.raises(ValueError, match="unknown event"):
        Hooks().on("finished", lambda e: None)  # type: ignore[arg-type]


async def test_progress_is_refused_once_the_run_ends(make_queue: QueueFactory) -> None:
    """update_progress works while the job runs; on the job object kept past its run it raises, writing nothing."""
    queue = make_queue()
    added = await queue.add("keep", {})
    kept: list[Job] = []

    async def processor(job: Job) -> None:
        await job.update_progress(1)
        kept.append(job)

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 1))
    with pytest.raises(RuntimeError, match="only available while the job runs"):
        await kept[0].update_progress(2)
    stored = await queue.get(added.job_id)
    assert stored is not None
    assert stored.progress == 1


async def test_a_finished_job_is_freed_without_the_garbage_collector(make_queue: QueueFactory) -> None:
    """No job run leaves a reference cycle: with the collector off, every job the worker ran is freed by the time it
    stops (each cycle would otherwise wait in memory for the next collection, and make it longer)."""
    queue = make_queue()
    for i in range(20):
        await queue.add("n", {"i": i})
    seen: list[weakref.ref[Job]] = []

    async def processor(job: Job) -> None:
        await job.update_progress(50)
        seen.append(weakref.ref(job))

    gc.collect()
    gc.disable()
    try:
        async with running(Worker(queue, processor, concurrency=5)):
            await wait_until(lambda: finished(queue, 20))
        alive = [ref() for ref in seen if ref() is not None]
    finally:
        gc.enable()
    assert len(seen) == 20
    assert alive == []
