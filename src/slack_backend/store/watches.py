"""Watched conversations, the threads a watching user takes part in, and the one open passive suggestion per thread."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Column, ColumnElement, Connection, Index, String, Table, and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import UTCDateTime, dialect_insert, in_connection, in_transaction, metadata, utc_now

# A user watching more than this many conversations is refused one more (App Home lists them all).
MAX_WATCHES_PER_USER = 25
# A passive suggestion nobody acted on stops holding its thread after this long.
OPEN_SUGGESTION_TTL = timedelta(hours=12)

watched_conversations_table = Table(
    "watched_conversations",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "workspace_id", "user_id"),
)

# Threads of watched conversations the user wrote in: a reply there is for them.
watched_threads_table = Table(
    "watched_threads",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("thread_ts", String(32), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("seen_at", UTCDateTime, nullable=False),
)

# At most one row per (user, conversation, thread): a passive suggestion offered and not yet answered.
open_passive_table = Table(
    "open_passive_suggestions",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("thread_key", String(32), primary_key=True),
    Column("opened_at", UTCDateTime, nullable=False),
)


def thread_key(thread_ts: str | None, message_ts: str, *, is_dm: bool) -> str:
    """Which "thread" a passive suggestion holds open: the thread, a DM's whole top level, or the message itself
    (a top-level mention: the replies to it form its thread)."""
    return thread_ts or ("dm" if is_dm else message_ts)


class WatchLimitError(ValueError):
    """The user already watches MAX_WATCHES_PER_USER conversations."""


class WatchStore:
    """Who watches which conversation, and the caps on passive suggestions.

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def watch(self, workspace_id: str, user_id: str, channel_id: str) -> bool:
        """Start watching; False when the user watched it already.

        Raises:
            WatchLimitError: the user watches MAX_WATCHES_PER_USER conversations already.
        """
        if channel_id in await self.watched(workspace_id, user_id):
            return False
        if len(await self.watched(workspace_id, user_id)) >= MAX_WATCHES_PER_USER:
            raise WatchLimitError(f"you can watch at most {MAX_WATCHES_PER_USER} conversations")
        statement = (
            dialect_insert(self._engine, watched_conversations_table)
            .values(workspace_id=workspace_id, channel_id=channel_id, user_id=user_id, created_at=self._clock())
            .on_conflict_do_nothing()
        )
        return await in_transaction(self._engine, lambda conn: conn.execute(statement).rowcount == 1)

    async def unwatch(self, workspace_id: str, user_id: str, channel_id: str) -> bool:
        """Stop watching, and forget its threads and open suggestions; False when it was not watched."""

        def unwatch(conn: Connection) -> bool:
            result = conn.execute(
                delete(watched_conversations_table).where(
                    _who(watched_conversations_table, workspace_id, user_id, channel_id)
                )
            )
            conn.execute(
                delete(watched_threads_table).where(_who(watched_threads_table, workspace_id, user_id, channel_id))
            )
            conn.execute(delete(open_passive_table).where(_who(open_passive_table, workspace_id, user_id, channel_id)))
            return result.rowcount == 1

        return await in_transaction(self._engine, unwatch)

    async def watched(self, workspace_id: str, user_id: str) -> list[str]:
        """The conversations the user watches, oldest watch first."""
        c = watched_conversations_table.c
        query = (
            select(c.channel_id)
            .where(c.workspace_id == workspace_id, c.user_id == user_id)
            .order_by(c.created_at, c.channel_id)
        )
        return await in_connection(self._engine, lambda conn: list(conn.scalars(query).all()))

    async def watchers(self, workspace_id: str, channel_id: str) -> list[str]:
        """The users who watch the conversation."""
        c = watched_conversations_table.c
        query = select(c.user_id).where(c.workspace_id == workspace_id, c.channel_id == channel_id).order_by(c.user_id)
        return await in_connection(self._engine, lambda conn: list(conn.scalars(query).all()))

    async def note_thread(self, workspace_id: str, user_id: str, channel_id: str, thread_ts: str) -> None:
        """Remember that the user wrote in this thread of a conversation they watch."""
        statement = (
            dialect_insert(self._engine, watched_threads_table)
            .values(
                workspace_id=workspace_id,
                channel_id=channel_id,
                thread_ts=thread_ts,
                user_id=user_id,
                seen_at=self._clock(),
            )
            .on_conflict_do_nothing()
        )
        await in_transaction(self._engine, lambda conn: conn.execute(statement))

    async def in_thread(self, workspace_id: str, user_id: str, channel_id: str, thread_ts: str) -> bool:
        """Whether the user wrote in the thread (since they watched its conversation)."""
        c = watched_threads_table.c
        query = select(c.user_id).where(
            _who(watched_threads_table, workspace_id, user_id, channel_id), c.thread_ts == thread_ts
        )
        return await in_connection(self._engine, lambda conn: conn.scalar(query) is not None)

    async def open_suggestion(self, workspace_id: str, user_id: str, channel_id: str, thread_key: str) -> bool:
        """Claim the thread's one open passive suggestion for the user: True when this call claimed it.

        A claim older than OPEN_SUGGESTION_TTL is taken over; one call wins when several race.
        """
        now = self._clock()
        t = open_passive_table
        statement = (
            dialect_insert(self._engine, t)
            .values(
                workspace_id=workspace_id, user_id=user_id, channel_id=channel_id, thread_key=thread_key, opened_at=now
            )
            .on_conflict_do_nothing()
        )
        stale = update(t).where(
            _who(t, workspace_id, user_id, channel_id),
            t.c.thread_key == thread_key,
            t.c.opened_at < now - OPEN_SUGGESTION_TTL,
        )

        def claim(conn: Connection) -> bool:
            if conn.execute(statement).rowcount == 1:
                return True
            return conn.execute(stale.values(opened_at=now)).rowcount == 1

        return await in_transaction(self._engine, claim)

    async def close_suggestion(self, workspace_id: str, user_id: str, channel_id: str, thread_key: str) -> bool:
        """Release the thread's open passive suggestion (the user answered, sent or dismissed it)."""
        statement = delete(open_passive_table).where(
            _who(open_passive_table, workspace_id, user_id, channel_id),
            open_passive_table.c.thread_key == thread_key,
        )
        return await in_transaction(self._engine, lambda conn: conn.execute(statement).rowcount == 1)


def _who(table: Table, workspace_id: str, user_id: str, channel_id: str) -> ColumnElement[bool]:
    c = table.c
    return and_(c.workspace_id == workspace_id, c.user_id == user_id, c.channel_id == channel_id)
