"""Event hooks: sync and async hooks run; a hook that raises is logged and changes no job state."""

from __future__ import annotations

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
