"""Saved drafts: each job's draft is stored before it is delivered, so a rerun delivers it again or does nothing;
and what the user did with it on its card (revisions, sent once as the user, dismissed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    and_,
    bindparam,
    false,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.audit import audit_table
from slack_backend.store.db import UTCDateTime, dialect_insert, in_connection, in_transaction, metadata, utc_now
from slack_backend.store.preferences import Preferences, preferences_from, user_preferences_table
from slack_backend.store.quotas import workspace_quota_table

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
    # What the draft answers and how it was asked for, so Regenerate can draft again from the same source.
    Column("trigger", String(32), nullable=True),
    Column("source_text", Text, nullable=True),
    Column("instruction", Text, nullable=True),
    # How many refinements or regenerations replaced the text (its history is in suggestion_revisions).
    Column("revision", Integer, nullable=False, server_default="0"),
    # Sent as the user from the card: set once (a conditional update decides who sends); `edited` when the sent
    # text is the user's edit of the draft, which makes it a good example of how they write.
    Column("sent_at", UTCDateTime, nullable=True),
    Column("sent_text", Text, nullable=True),
    Column("sent_ts", String(32), nullable=True),
    Column("edited", Boolean, nullable=False, server_default=false()),
    Column("dismissed_at", UTCDateTime, nullable=True),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in SUGGESTION_STATUSES)})", name="status"),
    Index(None, "workspace_id", "user_id"),
)

RevisionKind = Literal["refine", "regenerate"]

suggestion_revisions_table = Table(
    "suggestion_revisions",
    metadata,
    # The refine or regenerate job's id: one revision per job, however often the job runs.
    Column("id", String(255), primary_key=True),
    Column("suggestion_id", String(255), ForeignKey("suggestions.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("instruction", Text, nullable=True),
    Column("previous_text", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("model", String(128), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cut_short", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('refine', 'regenerate')", name="kind"),
    Index(None, "suggestion_id", "number", unique=True),
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
    trigger: str | None = None
    source_text: str | None = None
    instruction: str | None = None
    revision: int = 0
    sent_at: datetime | None = None
    sent_text: str | None = None
    sent_ts: str | None = None
    edited: bool = False
    dismissed_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Suggestion:
        values = row._mapping
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Revision:
    """One refinement or regeneration of a draft: what was asked, the text before and after."""

    id: str
    suggestion_id: str
    number: int
    kind: RevisionKind
    instruction: str | None
    previous_text: str
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cut_short: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> Revision:
        values = row._mapping
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class DraftStart:
    """What a draft job reads before it may call the model: its saved draft (a rerun delivers that instead), the
    workspace's daily token quota override (None: the default applies), its tokens used since a moment, and the
    requester's preferences (the defaults when they saved none)."""

    saved: Suggestion | None
    daily_tokens: int | None
    tokens_used: int
    preferences: Preferences


@dataclass(frozen=True, slots=True)
class CardStart:
    """What a refine or regenerate job reads before it may call the model: the draft it changes, the revision this
    job saved already (a rerun delivers that instead), and the workspace's quota override and use, as in DraftStart."""

    suggestion: Suggestion | None
    revision: Revision | None
    daily_tokens: int | None
    tokens_used: int


SendClaim = Literal["claimed", "sent", "gone", "not_owner"]

# A one-row table: a start read outer-joins what may be missing to it, so it always answers one row.
_ONE = select(literal(1).label("one")).subquery()
_REVISION_LABEL = "revision_row_"
_PREFERENCES_LABEL = "preferences_row_"


def _quota_use_columns() -> tuple[Any, Any]:
    """The workspace's daily token override and its tokens used since a moment, as two labelled scalar subqueries
    (bound parameters `workspace_id` and `since`)."""
    q, a = workspace_quota_table.c, audit_table.c
    override = select(q.daily_tokens).where(q.workspace_id == bindparam("workspace_id")).scalar_subquery()
    used = (
        select(func.coalesce(func.sum(a.input_tokens + a.output_tokens), 0))
        .where(a.workspace_id == bindparam("workspace_id"), a.finished_at >= bindparam("since"))
        .scalar_subquery()
    )
    return override.label("quota_daily_tokens"), used.label("quota_tokens_used")


def _quota_use(row: Row[Any]) -> tuple[int | None, int]:
    """(override or None, tokens used) from a row selected with `_quota_use_columns`."""
    values = row._mapping
    daily_tokens = values["quota_daily_tokens"]
    return None if daily_tokens is None else int(daily_tokens), int(values["quota_tokens_used"] or 0)


# The start reads, built once (bound parameters: job_id, suggestion_id, workspace_id, since, user_id): building and
# keying a statement of this size cost about as much as running it on SQLite (docs/performance.md, round 6).
_DRAFT_START = select(
    suggestions_table,
    *_quota_use_columns(),
    *(column.label(f"{_PREFERENCES_LABEL}{column.name}") for column in user_preferences_table.c),
).select_from(
    _ONE.outerjoin(suggestions_table, suggestions_table.c.id == bindparam("job_id")).outerjoin(
        user_preferences_table,
        and_(
            user_preferences_table.c.workspace_id == bindparam("workspace_id"),
            user_preferences_table.c.user_id == bindparam("user_id"),
        ),
    )
)
_CARD_START = select(
    suggestions_table,
    *(column.label(f"{_REVISION_LABEL}{column.name}") for column in suggestion_revisions_table.c),
    *_quota_use_columns(),
).select_from(
    _ONE.outerjoin(suggestions_table, suggestions_table.c.id == bindparam("suggestion_id")).outerjoin(
        suggestion_revisions_table, suggestion_revisions_table.c.id == bindparam("job_id")
    )
)

# The rest of a draft's and a card's path, built once the same way (b_*: an UPDATE's SET reserves the columns' names).
_GET = select(suggestions_table).where(suggestions_table.c.id == bindparam("b_id"))
_REVISION_DONE = select(suggestion_revisions_table.c.id).where(suggestion_revisions_table.c.id == bindparam("b_id"))
_INSERT_REVISION = suggestion_revisions_table.insert()
_REVISE = (
    suggestions_table.update()
    .where(suggestions_table.c.id == bindparam("b_id"))
    .values(
        text=bindparam("b_text"),
        cut_short=bindparam("b_cut_short"),
        model=bindparam("b_model"),
        revision=bindparam("b_revision"),
        updated_at=bindparam("b_updated_at", type_=UTCDateTime),
    )
)
_MARK_DELIVERED = (
    suggestions_table.update()
    .where(suggestions_table.c.id == bindparam("b_id"))
    .values(status="delivered", updated_at=bindparam("b_now", type_=UTCDateTime))
)


# What `save` writes; the other columns (revision, sent_*, edited, dismissed_at) start at their defaults.
_INSERTED = (
    "id",
    "workspace_id",
    "user_id",
    "channel_id",
    "thread_ts",
    "source_ts",
    "text",
    "model",
    "input_tokens",
    "output_tokens",
    "cut_short",
    "offline",
    "trigger",
    "source_text",
    "instruction",
    "status",
    "created_at",
    "updated_at",
)


class SuggestionStore:
    """Saves drafts by job id, marks them delivered, and forgets them when an operator asks for a new draft.

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        # Built once, like the start reads: a saved draft's INSERT, or nothing when the job saved one already.
        self._insert_new = dialect_insert(engine, suggestions_table).on_conflict_do_nothing(
            index_elements=[suggestions_table.c.id]
        )

    async def get(self, job_id: str) -> Suggestion | None:
        """The saved draft of `job_id`, or None."""
        row = await in_connection(self._engine, lambda conn: conn.execute(_GET, {"b_id": job_id}).one_or_none())
        return None if row is None else Suggestion.from_row(row)

    async def draft_start(self, job_id: str, workspace_id: str, *, since: datetime, user_id: str) -> DraftStart:
        """`get(job_id)`, `QuotaStore.daily_tokens`, `AuditLog.tokens_used(workspace_id, since)` and
        `PreferenceStore.get(workspace_id, user_id)` as one SELECT.

        The four reads a draft job makes before its model call, answered together: one statement, one round trip
        instead of four. The quota stays exact (the use is summed from the audit now), and the preferences are
        those saved now.
        """
        params = {"job_id": job_id, "workspace_id": workspace_id, "since": since, "user_id": user_id}
        row = await in_connection(self._engine, lambda conn: conn.execute(_DRAFT_START, params).one())
        daily_tokens, tokens_used = _quota_use(row)
        return DraftStart(
            saved=None if row._mapping["id"] is None else Suggestion.from_row(row),
            daily_tokens=daily_tokens,
            tokens_used=tokens_used,
            preferences=preferences_from(row._mapping, _PREFERENCES_LABEL),
        )

    async def card_start(self, suggestion_id: str, job_id: str, workspace_id: str, *, since: datetime) -> CardStart:
        """`get(suggestion_id)`, `revision(job_id)`, `QuotaStore.daily_tokens` and `AuditLog.tokens_used` as one
        SELECT: the reads a refine or regenerate job makes before its model call (four statements before)."""
        params = {"suggestion_id": suggestion_id, "job_id": job_id, "workspace_id": workspace_id, "since": since}
        row = await in_connection(self._engine, lambda conn: conn.execute(_CARD_START, params).one())
        values = row._mapping
        daily_tokens, tokens_used = _quota_use(row)
        revision = None
        if values[f"{_REVISION_LABEL}id"] is not None:
            fields = Revision.__dataclass_fields__
            revision = Revision(**{name: values[f"{_REVISION_LABEL}{name}"] for name in fields})
        return CardStart(
            suggestion=None if values["id"] is None else Suggestion.from_row(row),
            revision=revision,
            daily_tokens=daily_tokens,
            tokens_used=tokens_used,
        )

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
        trigger: str | None = None,
        source_text: str | None = None,
        instruction: str | None = None,
    ) -> Suggestion:
        """Save the draft of `job_id` as not yet delivered, unless one is saved already.

        Returns:
            The saved draft: this one, or the one saved first (two runs of a stalled job must deliver one text).
        """
        now = self._clock().astimezone(UTC)
        draft = Suggestion(
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
            trigger=trigger,
            source_text=source_text,
            instruction=instruction,
            status="saved",
            created_at=now,
            updated_at=now,
        )
        values = {name: getattr(draft, name) for name in _INSERTED}
        inserted = await in_transaction(self._engine, lambda conn: conn.execute(self._insert_new, values).rowcount)
        if inserted == 1:
            # The row is exactly `draft` (the columns not inserted keep their defaults, as the dataclass does): no
            # second read on the draft's path to the user.
            return draft
        saved = await self.get(job_id)
        if saved is None:  # pragma: no cover - only if someone deleted it in between
            raise LookupError(f"suggestion {job_id} vanished while being saved")
        return saved

    async def mark_delivered(self, job_id: str) -> bool:
        """Record that the draft reached the user; False when `job_id` has no saved draft."""
        params = {"b_id": job_id, "b_now": self._clock()}
        return await in_transaction(self._engine, lambda conn: conn.execute(_MARK_DELIVERED, params).rowcount == 1)

    async def discard(self, job_id: str) -> bool:
        """Forget the draft of `job_id`, so its next run drafts anew (an operator's `--regenerate`)."""

        def discard(conn: Connection) -> bool:
            # Explicitly, not by the foreign key alone: SQLite enforces ON DELETE CASCADE only with a pragma.
            revisions = suggestion_revisions_table.c
            conn.execute(suggestion_revisions_table.delete().where(revisions.suggestion_id == job_id))
            return conn.execute(suggestions_table.delete().where(suggestions_table.c.id == job_id)).rowcount == 1

        return await in_transaction(self._engine, discard)

    async def claim_send(self, suggestion_id: str, user_id: str, text: str, *, edited: bool) -> SendClaim:
        """Mark the draft sent by `user_id` with `text`, unless it was sent already: the one who gets "claimed"
        posts it, so a double click (or two tabs) sends once. "gone": no such draft; "not_owner": not theirs."""
        c = suggestions_table.c
        now = self._clock()
        claim = (
            suggestions_table.update()
            .where(c.id == suggestion_id, c.user_id == user_id, c.sent_at.is_(None))
            .values(sent_at=now, sent_text=text, edited=edited, updated_at=now)
        )
        if await in_transaction(self._engine, lambda conn: conn.execute(claim).rowcount) == 1:
            return "claimed"
        current = await self.get(suggestion_id)
        if current is None:
            return "gone"
        return "not_owner" if current.user_id != user_id else "sent"

    async def release_send(self, suggestion_id: str) -> None:
        """Undo a claim whose post failed, so the user can press Send again."""
        c = suggestions_table.c
        release = (
            suggestions_table.update()
            .where(c.id == suggestion_id, c.sent_ts.is_(None))
            .values(sent_at=None, sent_text=None, edited=False, updated_at=self._clock())
        )
        await in_transaction(self._engine, lambda conn: conn.execute(release))

    async def record_sent_ts(self, suggestion_id: str, ts: str) -> None:
        """Keep the ts of the message posted as the user (its link, and proof the post happened)."""
        record = suggestions_table.update().where(suggestions_table.c.id == suggestion_id).values(sent_ts=ts)
        await in_transaction(self._engine, lambda conn: conn.execute(record))

    async def dismiss(self, suggestion_id: str) -> bool:
        """Record that the user dismissed the card; False when the draft is gone."""
        c = suggestions_table.c
        now = self._clock()
        dismiss = (
            suggestions_table.update()
            .where(c.id == suggestion_id, c.dismissed_at.is_(None))
            .values(dismissed_at=now, updated_at=now)
        )
        return await in_transaction(self._engine, lambda conn: conn.execute(dismiss).rowcount == 1)

    async def sent_edits(self, workspace_id: str, user_id: str, *, limit: int = 20) -> list[Suggestion]:
        """The user's drafts they edited and then sent, newest first: examples of how they write."""
        c = suggestions_table.c
        statement = (
            select(suggestions_table)
            .where(c.workspace_id == workspace_id, c.user_id == user_id, c.edited.is_(True), c.sent_at.is_not(None))
            .order_by(c.sent_at.desc())
            .limit(limit)
        )
        rows = await in_connection(self._engine, lambda conn: conn.execute(statement).all())
        return [Suggestion.from_row(row) for row in rows]

    async def revision(self, job_id: str) -> Revision | None:
        """The revision a refine/regenerate job made, or None (its rerun then drafts; else it delivers this)."""
        statement = select(suggestion_revisions_table).where(suggestion_revisions_table.c.id == job_id)
        row = await in_connection(self._engine, lambda conn: conn.execute(statement).one_or_none())
        return None if row is None else Revision.from_row(row)

    async def revisions(self, suggestion_id: str) -> list[Revision]:
        """A draft's refinements and regenerations, oldest first."""
        r = suggestion_revisions_table.c
        statement = select(suggestion_revisions_table).where(r.suggestion_id == suggestion_id).order_by(r.number)
        rows = await in_connection(self._engine, lambda conn: conn.execute(statement).all())
        return [Revision.from_row(row) for row in rows]

    async def revise(
        self,
        suggestion_id: str,
        job_id: str,
        *,
        kind: RevisionKind,
        instruction: str | None,
        text: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cut_short: bool,
    ) -> Suggestion | None:
        """Replace the draft's text with a revision, kept in its history, unless the draft was sent or is gone.

        Returns:
            The draft as it is now (already revised by this job on a rerun), or None when it is gone.
        """
        now = self._clock().astimezone(UTC)

        def revise(conn: Connection) -> Suggestion | None:
            done = conn.execute(_REVISION_DONE, {"b_id": job_id}).one_or_none()
            current = conn.execute(_GET, {"b_id": suggestion_id}).one_or_none()
            if current is None:
                return None
            draft = Suggestion.from_row(current)
            if done is not None or draft.sent_at is not None:
                return draft
            number = draft.revision + 1
            revision = {
                "id": job_id,
                "suggestion_id": suggestion_id,
                "number": number,
                "kind": kind,
                "instruction": instruction,
                "previous_text": draft.text,
                "text": text,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cut_short": cut_short,
                "created_at": now,
            }
            conn.execute(_INSERT_REVISION, revision)
            revised = replace(draft, text=text, cut_short=cut_short, model=model, revision=number, updated_at=now)
            changed = ("text", "cut_short", "model", "revision", "updated_at")
            conn.execute(_REVISE, {"b_id": suggestion_id, **{f"b_{k}": getattr(revised, k) for k in changed}})
            # The row is the one read, with these changes (as `save` returns its row): no second read.
            return revised

        return await in_transaction(self._engine, revise)
