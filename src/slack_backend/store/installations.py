"""Multi-workspace OAuth storage: Slack installations with their bot tokens, and one-time OAuth states."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy import Index, Table, and_
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import metadata

DEFAULT_STATE_EXPIRATION_S = 600

_logger = logging.getLogger(__name__)

# slack_sdk's own schema, declared on our metadata so `create_tables` makes it with the rest. Bot tokens live
# in these two tables and nowhere else at rest (never in job data, Redis or logs).
installations_table: Table = AsyncSQLAlchemyInstallationStore.build_installations_table(
    metadata, AsyncSQLAlchemyInstallationStore.default_installations_table_name
)
bots_table: Table = AsyncSQLAlchemyInstallationStore.build_bots_table(
    metadata, AsyncSQLAlchemyInstallationStore.default_bots_table_name
)
oauth_states_table: Table = AsyncSQLAlchemyOAuthStateStore.build_oauth_states_table(
    metadata, AsyncSQLAlchemyOAuthStateStore.default_table_name
)
# slack_sdk's table has no index on the state; every OAuth callback looks one up.
Index("ix_slack_oauth_states_state", oauth_states_table.c.state, unique=True)


class _InstallationStore(AsyncSQLAlchemyInstallationStore):
    """slack_sdk's async SQLAlchemy installation store, on our engine and our metadata."""

    def __init__(self, client_id: str, engine: AsyncEngine) -> None:
        super().__init__(client_id=client_id, engine=engine, logger=_logger)
        self.metadata = metadata
        self.installations = installations_table
        self.bots = bots_table


class _OAuthStateStore(AsyncSQLAlchemyOAuthStateStore):
    """slack_sdk's async SQLAlchemy OAuth state store, with a consume that is atomic.

    slack_sdk reads the state and then deletes it, so two callbacks racing with one state could both pass. Here
    one DELETE decides: only the caller that removes an unexpired row gets True.
    """

    def __init__(self, engine: AsyncEngine, expiration_s: int) -> None:
        super().__init__(expiration_seconds=expiration_s, engine=engine, logger=_logger)
        self.metadata = metadata
        self.oauth_states = oauth_states_table

    async def async_consume(self, state: str) -> bool:
        # Same naive-UTC convention as slack_sdk's async_issue writes (its DateTime column has no zone).
        now = datetime.now(UTC).replace(tzinfo=None)
        c = self.oauth_states.c
        try:
            async with self.engine.begin() as conn:
                consumed = await conn.execute(
                    self.oauth_states.delete().where(and_(c.state == state, c.expire_at > now))
                )
                # Abandoned flows leave states behind; expired ones are useless, so they go now.
                await conn.execute(self.oauth_states.delete().where(c.expire_at <= now))
        except Exception as exc:
            # The OAuth flow treats False as "invalid state" and shows the user an error page: the right outcome
            # when the database is down. The state itself is not logged: it is a one-time secret.
            _logger.warning("OAuth state could not be consumed: %s", type(exc).__name__)
            return False
        return consumed.rowcount == 1


def installation_store(engine: AsyncEngine, client_id: str) -> AsyncInstallationStore:
    """Return the installation store of the Slack app `client_id`: saves, finds and deletes installations and bots.

    Its tables are made by `create_tables`.
    """
    return _InstallationStore(client_id, engine)


def oauth_state_store(
    engine: AsyncEngine, expiration_seconds: int = DEFAULT_STATE_EXPIRATION_S
) -> AsyncOAuthStateStore:
    """Return the store of OAuth `state` values: each is issued once, valid for `expiration_seconds`, consumed once.

    Its table is made by `create_tables`.

    Raises:
        ValueError: `expiration_seconds` is negative.
    """
    if expiration_seconds < 0:
        raise ValueError("expiration_seconds must be >= 0")
    return _OAuthStateStore(engine, expiration_seconds)
