"""The running job's log context: set once per job task, merged into a log line only when one is written.

structlog's `bind_contextvars` costs a context variable per key and is paid on every job at every level, even
when nothing is logged. Here a job's four fields go into one context variable, one `set` per job task; the
`merge_job_context` processor copies them into a line's event dict when a line is actually rendered. Add it to
the structlog processors (and to the standard library's `foreign_pre_chain`) wherever job lines must carry
job_id, queue, group and attempt; `slack_backend.logging.configure_logging` does.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

# (job_id, queue, group, attempt) of the job whose task this is; a task's context is its own copy, so the value
# ends with the task and tasks or threads it starts inherit it.
_JOB: ContextVar[tuple[str, str, str, int] | None] = ContextVar("slack_backend_job_log_context", default=None)


def set_job_log_context(job_id: str, queue: str, group: str, attempt: int) -> None:
    """Mark every line logged from now on in this task (and tasks it starts) as about this job run."""
    _JOB.set((job_id, queue, group, attempt))


def job_log_context() -> dict[str, Any]:
    """The current job's fields as a line would carry them; empty outside a job."""
    job = _JOB.get()
    if job is None:
        return {}
    return {"job_id": job[0], "queue": job[1], "group": job[2], "attempt": job[3]}


def merge_job_context(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: add job_id, queue, group and attempt of the running job, unless the line has them.

    Like structlog's `merge_contextvars`, a key the call or the bound logger gives wins.
    """
    job = _JOB.get()
    if job is not None:
        setdefault = event_dict.setdefault
        setdefault("job_id", job[0])
        setdefault("queue", job[1])
        setdefault("group", job[2])
        setdefault("attempt", job[3])
    return event_dict
