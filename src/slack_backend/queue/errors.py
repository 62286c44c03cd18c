"""The engine's exceptions: control flow for processors, and errors mapped from Lua return codes."""

from __future__ import annotations

from enum import IntEnum


class QueueError(Exception):
    """Base of every error the engine raises."""


class UnrecoverableError(Exception):
    """Raised by a processor: fail the job now, with no further attempts."""


class RetryAfter(Exception):  # noqa: N818 - a control-flow signal named like BullMQ's and arq's
    """Raised by a processor: run the job again after `delay_s`, without spending an attempt.

    With `hold_queue=True` (an upstream 429 that limits everyone) no job of the queue starts until then.
    """

    def __init__(self, delay_s: float, *, hold_queue: bool = False, reason: str = "") -> None:
        if delay_s < 0:
            raise ValueError("RetryAfter delay_s must be >= 0")
        self.delay_s = delay_s
        self.hold_queue = hold_queue
        self.reason = reason
        super().__init__(reason or f"retry after {delay_s:.3f} s")


class ScriptCode(IntEnum):
    """Return codes of the Lua scripts (negative = refused), mapped to exceptions in one place."""

    OK = 0
    JOB_NOT_FOUND = -1
    LEASE_LOST = -2
    NOT_ACTIVE = -3
    NOT_IN_STATE = -4
    DUPLICATE = -5
    OVER_HOLD_BOUND = -6


class JobNotFoundError(QueueError):
    """The job id is not (or no longer) in the queue."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found")


class LeaseLostError(QueueError):
    """A worker tried to finish a job whose lease it no longer holds (expired or taken over)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"lease on job {job_id!r} was lost; another worker owns it or it was recovered")


class StalledError(QueueError):
    """A job failed because it stalled too often: its workers stopped renewing its lease (crashed or froze)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        super().__init__(reason)


class JobStateError(QueueError):
    """The job is not in the state the operation needs (for example, retrying a job that is not failed)."""

    def __init__(self, job_id: str, detail: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r}: {detail}")


class InvalidJobDataError(QueueError):
    """Job data or options were refused before anything was written."""


class NotReplicatedError(QueueError):
    """Jobs were stored on the primary, but fewer replicas than asked confirmed them in time.

    The jobs exist (`job_ids`) and will run unless a failover loses them; the caller should not report them as
    safely queued. Adding them again with the same ids is safe: a kept id is not added twice.
    """

    def __init__(self, job_ids: list[str], acked: int, wanted: int, timeout_ms: int) -> None:
        self.job_ids = job_ids
        self.acked = acked
        self.wanted = wanted
        super().__init__(
            f"{len(job_ids)} job(s) stored on the primary but held by {acked} of {wanted} replicas "
            f"after {timeout_ms} ms"
        )


def raise_for_code(code: int, job_id: str, detail: str = "") -> None:
    """Map a script's return code to its exception; do nothing on OK or positive codes."""
    if code >= 0:
        return
    kind = ScriptCode(code)
    if kind is ScriptCode.JOB_NOT_FOUND:
        raise JobNotFoundError(job_id)
    if kind is ScriptCode.LEASE_LOST:
        raise LeaseLostError(job_id)
    raise JobStateError(job_id, detail or kind.name.lower().replace("_", " "))
