"""The request audit: one row per job with its ids, outcome, timings and token counts, and never any message text."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    Row,
    String,
    Table,
    bindparam,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import UTCDateTime, dialect_insert, in_connection, in_transaction, metadata, utc_now

AuditStatus = Literal["queued", "active", "completed", "failed"]
FinishedStatus = Literal["completed", "failed"]

AUDIT_STATUSES: tuple[AuditStatus, ...] = get_args(AuditStatus)
FINISHED_STATUSES: tuple[FinishedStatus, ...] = get_args(FinishedStatus)
MAX_ERROR_KIND_CHARS = 64

# A classification is a word like "rate_limited" or "slack.channel_not_found": no spaces, so a sentence (which
# could quote the user's message or the model's reply) cannot be stored by mistake.
_KIND = re.compile(rf"^[a-z0-9][a-z0-9_.:-]{{0,{MAX_ERROR_KIND_CHARS - 1}}}$")

audit_table = Table(
    "request_audit",
    metadata,
    # SQLite only auto-increments a column declared INTEGER.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("job_id", String(255), nullable=False, unique=True),
    Column("workspace_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("channel_id", String(64), nullable=True),
    Column("trigger", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("wait_ms", BigInteger, nullable=True),
    Column("run_ms", BigInteger, nullable=True),
    Column("error_kind", String(MAX_ERROR_KIND_CHARS), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in AUDIT_STATUSES)})", name="status"),
    Index(None, "queued_at"),
    # tokens_used: one workspace's spend over a time window, read from the index alone (migration 0005).
    Index("ix_request_audit_quota_use", "workspace_id", "finished_at", "input_tokens", "output_tokens"),
)

# A job's finish, built once (bound parameters b_*; a SET clause reserves the columns' own names): the row read
# FOR UPDATE (PostgreSQL; SQLite ignores it) so a stalled job's old and new worker never interleave, then its update.
_FINISH_READ = select(audit_table.c.started_at).where(audit_table.c.job_id == bindparam("b_job_id")).with_for_update()
_FINISH = (
    audit_table.update()
    .where(audit_table.c.job_id == bindparam("b_job_id"))
    .values(
        status=bindparam("b_status"),
        input_tokens=audit_table.c.input_tokens + bindparam("b_input_tokens", type_=Integer),
        output_tokens=audit_table.c.output_tokens + bindparam("b_output_tokens", type_=Integer),
        error_kind=bindparam("b_error_kind"),
        finished_at=bindparam("b_now", type_=UTCDateTime),
        run_ms=bindparam("b_run_ms"),
        updated_at=bindparam("b_now", type_=UTCDateTime),
    )
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audited request as stored; times are timezone-aware UTC, durations in milliseconds."""

    job_id: str
    workspace_id: str
    user_id: str
    channel_id: str | None
    trigger: str
    status: AuditStatus
    attempts: int
    input_tokens: int
    output_tokens: int
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    wait_ms: int | None
    run_ms: int | None
    error_kind: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> AuditRow:
        values = row._mapping
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


class AuditLog:
    """Records each request's life (queued, started, finished) for the admin page and for token quotas.

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        # A new row, or nothing when `job_id` has one (Slack re-delivers; a job starts again). Built once, its values
        # bound at each call: building and keying a statement per call cost more than running it on SQLite
        # (docs/performance.md, round 6).
        self._insert_new = dialect_insert(engine, audit_table).on_conflict_do_nothing(
            index_elements=[audit_table.c.job_id]
        )

    async def record_queued(
        self, job_id: str, workspace_id: str, user_id: str, channel_id: str | None, trigger: str
    ) -> bool:
        """Record a request that was just queued.

        Idempotent on `job_id`: Slack re-delivers events, and a duplicate must not count twice.

        Returns:
            True when a row was added, False when `job_id` already had one.

        Raises:
            ValueError: `trigger` is not a short classification.
        """
        values = self._queued_values(job_id, workspace_id, user_id, channel_id, trigger)
        return await in_transaction(self._engine, lambda conn: conn.execute(self._insert_new, values).rowcount == 1)

    async def record_queued_and_started(
        self, job_id: str, workspace_id: str, user_id: str, channel_id: str | None, trigger: str, attempt: int
    ) -> None:
        """`record_queued` then `record_started`, in one transaction: a worker's start costs one round of
        BEGIN/COMMIT on the draft path, not two (docs/performance.md, round 4).

        A first start (no row yet) is one INSERT of the row as the two calls leave it (the same clock readings:
        queued, then started); only a job that has a row already (a retry, a rerun) reads and updates it.
        """
        if attempt < 1:
            raise ValueError("attempt must be >= 1")
        values = self._queued_values(job_id, workspace_id, user_id, channel_id, trigger)
        now = self._clock()
        started = {
            "status": "active",
            "attempts": attempt,
            "started_at": now,
            "wait_ms": _elapsed_ms(values["queued_at"], now),
            "updated_at": now,
        }

        def record(conn: Connection) -> None:
            if conn.execute(self._insert_new, values | started).rowcount != 1:
                _started(conn, job_id, attempt, now)

        await in_transaction(self._engine, record)

    def _queued_values(
        self, job_id: str, workspace_id: str, user_id: str, channel_id: str | None, trigger: str
    ) -> dict[str, Any]:
        _check_kind("trigger", trigger)
        now = self._clock()
        return {
            "job_id": job_id,
            "workspace_id": workspace_id,
            "user_id": user_id,
            "channel_id": channel_id,
            "trigger": trigger,
            "status": "queued",
            "attempts": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "queued_at": now,
            "created_at": now,
            "updated_at": now,
        }

    async def record_started(self, job_id: str, attempt: int) -> bool:
        """Record that attempt number `attempt` (1 for the first) of a job began.

        `started_at` and `wait_ms` (queued to started) describe the first attempt: the wait the user saw.

        Returns:
            False when the job has no audit row (it is then left alone).
        """
        if attempt < 1:
            raise ValueError("attempt must be >= 1")
        now = self._clock()
        return await in_transaction(self._engine, lambda conn: _started(conn, job_id, attempt, now))

    async def record_finished(
        self,
        job_id: str,
        status: FinishedStatus,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        error_kind: str | None = None,
    ) -> bool:
        """Record a job's outcome and the tokens it spent.

        Tokens add to the row's totals, so a job finished again (retried by an operator) keeps its earlier spend.
        `run_ms` runs from the first start to now, retries and their backoff included.

        Args:
            status: "completed" or "failed".
            error_kind: a short classification such as "rate_limited"; never an error message.

        Returns:
            False when the job has no audit row (it is then left alone).

        Raises:
            ValueError: an unknown status, negative tokens, or an `error_kind` that is not a short classification.
        """
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, not {status!r}")
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        if error_kind is not None:
            _check_kind("error_kind", error_kind)
        now = self._clock()

        def finish(conn: Connection) -> bool:
            row = conn.execute(_FINISH_READ, {"b_job_id": job_id}).one_or_none()
            if row is None:
                return False
            run_ms = None if row.started_at is None else _elapsed_ms(row.started_at, now)
            finished = {
                "b_job_id": job_id,
                "b_status": status,
                "b_input_tokens": input_tokens,
                "b_output_tokens": output_tokens,
                "b_error_kind": error_kind,
                "b_now": now,
                "b_run_ms": run_ms,
            }
            conn.execute(_FINISH, finished)
            return True

        return await in_transaction(self._engine, finish)

    async def recent(self, limit: int = 50) -> list[AuditRow]:
        """Return the `limit` most recently queued requests, newest first."""
        c = audit_table.c
        query = select(audit_table).order_by(c.queued_at.desc(), c.id.desc()).limit(limit)
        rows = await in_connection(self._engine, lambda conn: conn.execute(query).all())
        return [AuditRow.from_row(row) for row in rows]

    async def tokens_used(self, workspace_id: str, since: datetime) -> int:
        """Return the input plus output tokens of the workspace's requests finished at or after `since` (aware)."""
        c = audit_table.c
        query = select(func.coalesce(func.sum(c.input_tokens + c.output_tokens), 0)).where(
            c.workspace_id == workspace_id, c.finished_at >= since
        )
        total = await in_connection(self._engine, lambda conn: conn.scalar(query))
        return int(total or 0)


def _started(conn: Connection, job_id: str, attempt: int, now: datetime) -> bool:
    """Mark the job's row active at attempt `attempt`; False when it has no row."""
    c = audit_table.c
    # FOR UPDATE (PostgreSQL; SQLite ignores it): a stalled job's old and new worker must not interleave.
    found = conn.execute(select(c.queued_at, c.started_at, c.attempts).where(c.job_id == job_id).with_for_update())
    row = found.one_or_none()
    if row is None:
        return False
    values: dict[str, Any] = {"status": "active", "attempts": max(row.attempts, attempt), "updated_at": now}
    if row.started_at is None:
        values["started_at"] = now
        values["wait_ms"] = _elapsed_ms(row.queued_at, now)
    conn.execute(audit_table.update().where(c.job_id == job_id).values(values))
    return True


def _check_kind(name: str, value: str) -> None:
    if not _KIND.match(value):
        raise ValueError(f"{name} must be a short classification like 'rate_limited' (a-z, 0-9, _ . : -)")


def _elapsed_ms(start: datetime, end: datetime) -> int:
    # Clamped: a clock stepped back between two processes must not give a negative duration.
    return max(0, round((end - start).total_seconds() * 1000))
