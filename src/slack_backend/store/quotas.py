"""Per-workspace overrides of the daily token quota; a workspace without one gets the configured default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import UTCDateTime, dialect_insert, in_connection, in_transaction, metadata, utc_now

workspace_quota_table = Table(
    "workspace_quota",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("daily_tokens", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("daily_tokens >= 0", name="daily_tokens_not_negative"),
)


class QuotaStore:
    """Reads and writes daily token quota overrides by workspace (team) id.

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def set_daily_tokens(self, workspace_id: str, daily_tokens: int | None) -> None:
        """Set the workspace's daily token quota; None removes the override, so the default applies again.

        Raises:
            ValueError: `daily_tokens` is negative (0 is allowed: it blocks the workspace).
        """
        c = workspace_quota_table.c
        if daily_tokens is None:
            remove = workspace_quota_table.delete().where(c.workspace_id == workspace_id)
            await in_transaction(self._engine, lambda conn: conn.execute(remove))
            return
        if daily_tokens < 0:
            raise ValueError("daily_tokens must be >= 0")
        now = self._clock()
        insert = dialect_insert(self._engine, workspace_quota_table).values(
            workspace_id=workspace_id, daily_tokens=daily_tokens, updated_at=now
        )
        statement = insert.on_conflict_do_update(
            index_elements=[c.workspace_id], set_={"daily_tokens": daily_tokens, "updated_at": now}
        )
        await in_transaction(self._engine, lambda conn: conn.execute(statement))

    async def daily_tokens(self, workspace_id: str, default: int) -> int:
        """Return the workspace's daily token quota: its override if it has one, else `default`."""
        c = workspace_quota_table.c
        query = select(c.daily_tokens).where(c.workspace_id == workspace_id)
        value = await in_connection(self._engine, lambda conn: conn.scalar(query))
        return default if value is None else int(value)

    async def overrides(self) -> dict[str, int]:
        """Return every override, by workspace id."""
        c = workspace_quota_table.c
        query = select(c.workspace_id, c.daily_tokens).order_by(c.workspace_id)
        rows = await in_connection(self._engine, lambda conn: conn.execute(query).all())
        return {workspace_id: int(daily_tokens) for workspace_id, daily_tokens in rows}
