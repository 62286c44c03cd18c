"""Where bot tokens come from at the moment of use: one static token, or the OAuth installation store."""

from __future__ import annotations

from typing import Protocol

from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore

from slack_backend.slack.errors import AppNotInstalledError


class TokenSource(Protocol):
    """Looks up the bot token of a workspace when a job needs it; tokens never travel in job data or logs."""

    async def bot_token(self, team_id: str, enterprise_id: str | None = None) -> str:
        """The bot token for `team_id`; raises an `UnrecoverableError` when the app is not installed there."""
        ...


class StaticTokenSource:
    """Single-workspace mode (SLACK_BOT_TOKEN): the same token for every request."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ValueError("the Slack bot token must not be empty")
        self._token = token.strip()

    def __repr__(self) -> str:
        # The default repr would show the token wherever this object is printed or logged.
        return "StaticTokenSource(token=[redacted])"

    async def bot_token(self, team_id: str, enterprise_id: str | None = None) -> str:
        """The configured token, whatever the workspace."""
        return self._token


class InstallationStoreTokenSource:
    """Multi-workspace mode (OAuth): the token of the workspace's latest bot installation."""

    def __init__(self, store: AsyncInstallationStore) -> None:
        self._store = store

    async def bot_token(self, team_id: str, enterprise_id: str | None = None) -> str:
        """The installed bot's token for the workspace (or its Enterprise Grid org-wide install).

        Raises:
            AppNotInstalledError: (an `UnrecoverableError`) no installation holds a bot token for the workspace.
        """
        bot = await self._store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)
        if bot is None and enterprise_id is not None:
            # An org-wide install is stored under the enterprise alone, with no team id.
            bot = await self._store.async_find_bot(
                enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True
            )
        token = bot.bot_token if bot is not None else None
        if not token:
            raise AppNotInstalledError()
        return token
