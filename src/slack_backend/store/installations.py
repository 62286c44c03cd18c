"""Multi-workspace OAuth storage: installations with bot and user tokens (encrypted), and one-time OAuth states."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore, SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy import ColumnElement, Connection, Index, MetaData, Select, String, Table, and_, bindparam, desc, select
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.crypto import ENCRYPTED_TOKEN_CHARS, EncryptedToken, TokenCipher, is_encrypted
from slack_backend.store.db import in_connection, metadata

DEFAULT_STATE_EXPIRATION_S = 600

_logger = logging.getLogger(__name__)

# slack_sdk's own schema, declared on our metadata (the migrations make it). Bot and user tokens live in these two
# tables and nowhere else at rest (never in job data, Redis or logs), always encrypted (store/crypto.py).
installations_table: Table = AsyncSQLAlchemyInstallationStore.build_installations_table(
    metadata, AsyncSQLAlchemyInstallationStore.default_installations_table_name
)
bots_table: Table = AsyncSQLAlchemyInstallationStore.build_bots_table(
    metadata, AsyncSQLAlchemyInstallationStore.default_bots_table_name
)
TOKEN_COLUMNS: dict[str, tuple[str, ...]] = {
    bots_table.name: ("bot_token", "bot_refresh_token"),
    installations_table.name: ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token"),
}
_TOKEN_TABLES = (bots_table, installations_table)
# Migration 0002 widened them: an encrypted token is longer than slack_sdk's 200 characters.
for _table in _TOKEN_TABLES:
    for _name in TOKEN_COLUMNS[_table.name]:
        _table.c[_name].type = String(ENCRYPTED_TOKEN_CHARS)
oauth_states_table: Table = AsyncSQLAlchemyOAuthStateStore.build_oauth_states_table(
    metadata, AsyncSQLAlchemyOAuthStateStore.default_table_name
)
# slack_sdk's table has no index on the state; every OAuth callback looks one up.
Index("ix_slack_oauth_states_state", oauth_states_table.c.state, unique=True)


def _encrypting_copy(table: Table, cipher: TokenCipher) -> Table:
    """The same table on a private MetaData, its token columns encrypting with `cipher` on write and read."""
    copy = table.to_metadata(MetaData())
    for name in TOKEN_COLUMNS[table.name]:
        copy.c[name].type = EncryptedToken(cipher)
    return copy


class _InstallationStore(AsyncSQLAlchemyInstallationStore):
    """slack_sdk's async SQLAlchemy installation store, on our engine, its tokens encrypted at rest.

    Encryption sits in the column type, not in `async_save`: slack_sdk compares tokens it has read back, which only
    works on decrypted values.

    The two finds every job makes (a workspace's bot token; a user's own token, which slack_sdk reads with the
    workspace's latest bot) read what slack_sdk's read, with its rules, but with statements built once per shape
    (slack_sdk builds each anew) and a lookup's queries on one connection in one greenlet (`in_connection`): about
    a third of a card click's database CPU went to building and running them (docs/performance.md, round 13).
    """

    def __init__(self, client_id: str, engine: AsyncEngine, cipher: TokenCipher) -> None:
        super().__init__(client_id=client_id, engine=engine, logger=_logger)
        self.metadata = metadata
        self.installations = _encrypting_copy(installations_table, cipher)
        self.bots = _encrypting_copy(bots_table, cipher)
        # A bot is never found by user: only the shapes without one.
        self._bot_selects = {
            shape: _latest(self.bots, client_id, shape, extra=self.bots.c.bot_token.is_not(None))
            for shape in _SHAPES
            if not shape[2]
        }
        self._installation_selects = {shape: _latest(self.installations, client_id, shape) for shape in _SHAPES}

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False
    ) -> Bot | None:
        team = None if is_enterprise_install else team_id
        return await in_connection(self.engine, lambda conn: self._find_bot(conn, enterprise_id, team))

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        team = None if is_enterprise_install else team_id
        return await in_connection(
            self.engine, lambda conn: self._find_installation(conn, enterprise_id, team, user_id)
        )

    async def async_find_user_installation(self, *, team_id: str, user_id: str) -> Installation | None:
        """The user's latest installation in the workspace as stored, for their own token: one query, without the
        workspace's latest bot that `async_find_installation` reads and merges in. Its bot fields may be stale,
        so what is saved back from it must first take `with_latest_bot`."""
        select_, params = _bound(self._installation_selects, None, team_id, user_id)

        def find(conn: Connection) -> Installation | None:
            row = conn.execute(select_, params).mappings().first()
            return None if row is None else SQLAlchemyInstallationStore.build_installation_entity(row)

        return await in_connection(self.engine, find)

    def _find_bot(self, conn: Connection, enterprise_id: str | None, team_id: str | None) -> Bot | None:
        """The latest bot with a token of the workspace (or org), as slack_sdk's `async_find_bot`."""
        select_, params = _bound(self._bot_selects, enterprise_id, team_id, None)
        row = conn.execute(select_, params).mappings().first()
        return None if row is None else SQLAlchemyInstallationStore.build_bot_entity(row)

    def _find_installation(
        self, conn: Connection, enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> Installation | None:
        """The latest installation (of the user, when given), as slack_sdk's `async_find_installation`: an
        installation of a user, or one without a bot token, carries the workspace's latest bot instead."""
        select_, params = _bound(self._installation_selects, enterprise_id, team_id, user_id)
        row = conn.execute(select_, params).mappings().first()
        if row is None:
            return None
        installation = SQLAlchemyInstallationStore.build_installation_entity(row)
        if user_id is None and installation.bot_token is not None:
            return installation
        return with_latest_bot(installation, self._find_bot(conn, enterprise_id, team_id))


def with_latest_bot(installation: Installation, latest: Bot | None) -> Installation:
    """`installation` carrying the workspace's latest bot (`latest`, when there is one), as slack_sdk's find of a
    user's installation gives it. Saving an installation saves its bot too, in the bot row of its install time:
    an installation read with older bot fields would, saved back, undo a later reinstall's or rotation's token."""
    if latest is not None and installation.bot_token != latest.bot_token:
        installation.bot_id = latest.bot_id
        installation.bot_user_id = latest.bot_user_id
        installation.bot_token = latest.bot_token
        installation.bot_scopes = latest.bot_scopes
        installation.bot_refresh_token = latest.bot_refresh_token
        installation.bot_token_expires_at = latest.bot_token_expires_at
    return installation


# A find's shape: whether it names an enterprise, a team and a user. A missing id must read IS NULL, which a bound
# parameter cannot say (`= NULL` matches nothing), so each shape has a statement of its own.
_Shape = tuple[bool, bool, bool]
_SHAPES: tuple[_Shape, ...] = tuple((e, t, u) for e in (False, True) for t in (False, True) for u in (False, True))


def _latest(table: Table, client_id: str, shape: _Shape, extra: ColumnElement[bool] | None = None) -> Select[Any]:
    """The newest row of `table` for the app and the ids `shape` names (absent ones NULL; no user: any user)."""
    c = table.c
    enterprise, team, user = shape
    where = [
        c.client_id == client_id,
        c.enterprise_id == bindparam("enterprise_id") if enterprise else c.enterprise_id.is_(None),
        c.team_id == bindparam("team_id") if team else c.team_id.is_(None),
    ]
    if user:
        where.append(c.user_id == bindparam("user_id"))
    if extra is not None:
        where.append(extra)
    return select(table).where(and_(*where)).order_by(desc(c.installed_at)).limit(1)


def _bound(
    selects: dict[_Shape, Select[Any]], enterprise_id: str | None, team_id: str | None, user_id: str | None
) -> tuple[Select[Any], dict[str, str]]:
    """The statement of these ids' shape and its parameters."""
    given = {"enterprise_id": enterprise_id, "team_id": team_id, "user_id": user_id}
    params = {name: value for name, value in given.items() if value is not None}
    return selects[(enterprise_id is not None, team_id is not None, user_id is not None)], params


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


def installation_store(engine: AsyncEngine, client_id: str, cipher: TokenCipher) -> AsyncInstallationStore:
    """Return the installation store of the Slack app `client_id`: saves, finds and deletes installations and bots.

    Tokens are encrypted with `cipher` on write and decrypted on read. Its tables are made by `create_tables`.
    """
    return _InstallationStore(client_id, engine, cipher)


async def reencrypt_tokens(engine: AsyncEngine, cipher: TokenCipher, *, plaintext_only: bool = False) -> int:
    """Encrypt every stored token with the cipher's current key, in one transaction.

    Args:
        plaintext_only: only encrypt tokens stored in plaintext (before encryption existed); leave encrypted ones.

    Returns:
        How many token values were rewritten.

    Raises:
        TokenKeyError: a token was encrypted with a key the cipher does not hold (nothing is changed then).
    """
    changed = 0
    async with engine.begin() as conn:
        for table in _TOKEN_TABLES:
            names = TOKEN_COLUMNS[table.name]
            rows = await conn.execute(select(table.c.id, *(table.c[name] for name in names)).with_for_update())
            for row in rows.all():
                values: dict[str, str] = {}
                for name in names:
                    stored = row._mapping[name]
                    if stored is None or (plaintext_only and is_encrypted(stored)):
                        continue
                    values[name] = cipher.rotate(stored)
                if values:
                    await conn.execute(table.update().where(table.c.id == row.id).values(values))
                    changed += len(values)
    return changed


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
