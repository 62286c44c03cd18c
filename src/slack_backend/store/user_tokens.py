"""Disconnecting a user's own Slack account: their stored user token goes, the workspace's bot token stays."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import in_connection, in_transaction
from slack_backend.store.installations import installations_table


async def forget_user_token(engine: AsyncEngine, workspace_id: str, user_id: str) -> int:
    """Delete the user token (and its refresh token) the user granted in this workspace; returns rows changed.

    Only the user's columns are cleared: the row of the user who installed the app also carries the bot token.
    """
    c = installations_table.c
    statement = (
        update(installations_table)
        .where(c.team_id == workspace_id, c.user_id == user_id, c.user_token.is_not(None))
        .values(user_token=None, user_refresh_token=None, user_token_expires_at=None, user_scopes=None)
    )
    return await in_transaction(engine, lambda conn: int(conn.execute(statement).rowcount))


async def has_user_token(engine: AsyncEngine, workspace_id: str, user_id: str) -> bool:
    """Whether the user has connected their own Slack account in this workspace (a user token is stored)."""
    c = installations_table.c
    query = select(c.id).where(c.team_id == workspace_id, c.user_id == user_id, c.user_token.is_not(None)).limit(1)
    return await in_connection(engine, lambda conn: conn.scalar(query) is not None)
