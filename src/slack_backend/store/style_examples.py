"""A bounded set of each user's own messages, kept (with their consent) as examples of how they write."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Column, Connection, Index, Integer, String, Table, Text, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import UTCDateTime, dialect_insert, in_connection, in_transaction, metadata, utc_now

# Per user: past this many, the oldest examples are dropped.
MAX_EXAMPLES_PER_USER = 20
# One example longer than this is cut: a style sample needs a few sentences, not a report.
MAX_EXAMPLE_CHARS = 1_000
SOURCES = ("history", "sent_edit")

style_examples_table = Table(
    "style_examples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    # "history": read from the conversation with the user's token; "sent_edit": what they sent after editing a draft.
    Column("source", String(16), nullable=False),
    # The Slack ts of a message read from history, so reading it again adds nothing; NULL for sent edits.
    Column("source_ts", String(32), nullable=True),
    Column("text", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "workspace_id", "user_id", "source_ts", unique=True),
)


class StyleExampleStore:
    """Adds, lists and deletes a user's style examples; never more than MAX_EXAMPLES_PER_USER per user.

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def add_sent_edit(self, workspace_id: str, user: str, text: str) -> None:
        """Keep what the user sent after editing a draft: the best example of their voice."""
        await self._add(workspace_id, user, [(None, text)], source="sent_edit")

    async def add_history(self, workspace_id: str, user: str, messages: Sequence[tuple[str, str]]) -> None:
        """Keep the user's own messages read from a conversation, as (ts, text); a ts kept already adds nothing."""
        await self._add(workspace_id, user, messages, source="history")

    async def examples(self, workspace_id: str, user: str, *, limit: int = MAX_EXAMPLES_PER_USER) -> list[str]:
        """The user's newest examples, newest first."""
        c = style_examples_table.c
        query = (
            select(c.text)
            .where(c.workspace_id == workspace_id, c.user_id == user)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )
        return await in_connection(self._engine, lambda conn: list(conn.scalars(query).all()))

    async def count(self, workspace_id: str, user: str) -> int:
        """How many examples the user has."""
        c = style_examples_table.c
        query = select(func.count()).where(c.workspace_id == workspace_id, c.user_id == user)
        return await in_connection(self._engine, lambda conn: int(conn.scalar(query) or 0))

    async def delete_all(self, workspace_id: str, user: str) -> int:
        """Delete every example of the user; returns how many there were."""
        c = style_examples_table.c
        statement = delete(style_examples_table).where(c.workspace_id == workspace_id, c.user_id == user)
        return await in_transaction(self._engine, lambda conn: int(conn.execute(statement).rowcount))

    async def _add(self, workspace_id: str, user: str, items: Sequence[tuple[str | None, str]], *, source: str) -> None:
        rows = [
            {
                "workspace_id": workspace_id,
                "user_id": user,
                "source": source,
                "source_ts": ts,
                "text": text.strip()[:MAX_EXAMPLE_CHARS],
                "created_at": self._clock(),
            }
            for ts, text in items
            if text.strip()
        ]
        if not rows:
            return
        c = style_examples_table.c
        insert = dialect_insert(self._engine, style_examples_table)
        inserts = [insert.values(row).on_conflict_do_nothing() for row in rows]
        # Bounded: keep the newest MAX_EXAMPLES_PER_USER, in the same transaction.
        keep = (
            select(c.id)
            .where(c.workspace_id == workspace_id, c.user_id == user)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(MAX_EXAMPLES_PER_USER)
        )
        trim = delete(style_examples_table).where(c.workspace_id == workspace_id, c.user_id == user, c.id.not_in(keep))

        def add(conn: Connection) -> None:
            for insert in inserts:
                conn.execute(insert)
            conn.execute(trim)

        await in_transaction(self._engine, add)
