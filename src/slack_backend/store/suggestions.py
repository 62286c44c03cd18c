"""Saved drafts: each job's draft is stored before it is delivered, so a rerun delivers it again or does nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, Index, Row, String, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import UTCDateTime, dialect_insert, metadata, utc_now

SuggestionStatus = Literal["saved", "delivered"]
SUGGESTION_STATUSES: tuple[SuggestionStatus, ...] = get_args(SuggestionStatus)

suggestions_table = Table(
    "suggestions",
    metadata,
    # The job id: one draft per job, however often the job runs.
    Column("id", String(255), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("thread_ts", String(32), nullable=True),
    Column("source_ts", String(32), nullable=True),
    Column("text", Text, nullable=False),
    Column("model", String(128), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    # The model stopped at its output cap: the draft is shown marked as cut.
    Column("cut_short", Boolean, nullable=False),
    Column("offline", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in SUGGESTION_STATUSES)})", name="status"),
    Index(None, "workspace_id", "user_id"),
)


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One saved draft; `id` is the job's id."""

    id: str
    workspace_id: str
    user_id: str
    channel_id: str
    thread_ts: str | None
    source_ts: str | None
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cut_short: bool
    offline: bool
    status: SuggestionStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> Suggestion:
        values = row._mapping
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


class SuggestionStore:
    """Saves drafts by job id, marks them delivered, and forgets them when an operator asks for a new draft.

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def get(self, job_id: str) -> Suggestion | None:
        """The saved draft of `job_id`, or None."""
        async with self._engine.connect() as conn:
            result = await conn.execute(select(suggestions_table).where(suggestions_table.c.id == job_id))
            row = result.one_or_none()
        return None if row is None else Suggestion.from_row(row)

    async def save(
        self,
        job_id: str,
        *,
        workspace_id: str,
        user_id: str,
        channel_id: str,
        thread_ts: str | None,
        source_ts: str | None,
        text: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cut_short: bool = False,
        offline: bool = False,
    ) -> Suggestion:
        """Save the draft of `job_id` as not yet delivered, unless one is saved already.

        Returns:
            The saved draft: this one, or the one saved first (two runs of a stalled job must deliver one text).
        """
        now = self._clock()
        statement = (
            dialect_insert(self._engine, suggestions_table)
            .values(
                id=job_id,
                workspace_id=workspace_id,
                user_id=user_id,
                channel_id=channel_id,
                thread_ts=thread_ts,
                source_ts=source_ts,
                text=text,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cut_short=cut_short,
                offline=offline,
                status="saved",
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[suggestions_table.c.id])
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)
        saved = await self.get(job_id)
        if saved is None:  # pragma: no cover - only if someone deleted it in between
            raise LookupError(f"suggestion {job_id} vanished while being saved")
        return saved

    async def mark_delivered(self, job_id: str) -> bool:
        """Record that the draft reached the user; False when `job_id` has no saved draft."""
        c = suggestions_table.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                suggestions_table.update().where(c.id == job_id).values(status="delivered", updated_at=self._clock())
            )
        return result.rowcount == 1

    async def discard(self, job_id: str) -> bool:
        """Forget the draft of `job_id`, so its next run drafts anew (an operator's `--regenerate`)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(suggestions_table.delete().where(suggestions_table.c.id == job_id))
        return result.rowcount == 1
