"""Where Slack tokens come from at the moment of use: one static bot token, or the OAuth installation store
(bot tokens and users' own tokens, refreshed before use when Slack's token rotation is on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.logging import get_logger
from slack_backend.slack.errors import AppNotInstalledError
from slack_backend.store import TokenCipher
from slack_backend.store.installations import with_latest_bot

if TYPE_CHECKING:
    # Only for annotations: config imports slack.response_urls, so a runtime import here would be a cycle.
    from slack_backend.config import Settings

log = get_logger(__name__)

# What a user grants when connecting their own Slack account: reading the conversations they are in (where the bot
# may not read, e.g. channel threads), who wrote them (users:read) and writing as themselves ("send as me").
USER_SCOPES = ("channels:history", "groups:history", "im:history", "mpim:history", "users:read", "chat:write")
# A rotating token (12 h life) is refreshed when it has less than this left, so no call meets `token_expired`.
REFRESH_BEFORE_EXPIRY_MINUTES = 10


@runtime_checkable
class UserInstallationFinder(Protocol):
    """A store that reads a user's own installation row alone (the project's, `store/installations.py`)."""

    async def async_find_user_installation(self, *, team_id: str, user_id: str) -> Installation | None: ...


class TokenSource(Protocol):
    """Looks up Slack tokens when a job needs them; tokens never travel in job data or logs."""

    async def bot_token(self, team_id: str, enterprise_id: str | None = None) -> str:
        """The bot token for `team_id`; raises an `UnrecoverableError` when the app is not installed there."""
        ...

    async def user_token_for(self, team_id: str, user_id: str) -> str | None:
        """The token of the user's own connected Slack account, or None when they have not connected one."""
        ...


def token_cipher(settings: Settings) -> TokenCipher | None:
    """The cipher for stored tokens from TOKEN_ENCRYPTION_KEY (validated by the config), or None when unset."""
    key = settings.token_encryption_key
    return None if key is None else TokenCipher.from_setting(key.get_secret_value())


def require_token_cipher(settings: Settings) -> TokenCipher:
    """The cipher for stored tokens; OAuth mode cannot run without one (the config refuses to load then)."""
    cipher = token_cipher(settings)
    if cipher is None:
        raise ValueError("TOKEN_ENCRYPTION_KEY is required in OAuth mode")
    return cipher


def token_rotator(settings: Settings) -> AsyncTokenRotator | None:
    """slack_sdk's token rotator for this app (OAuth mode only), calling oauth.v2.access at SLACK_API_URL."""
    if settings.slack_client_id is None or settings.slack_client_secret is None:
        return None
    return AsyncTokenRotator(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(),
        client=AsyncWebClient(base_url=settings.slack_api_url),
    )


class StaticTokenSource:
    """Single-workspace mode (SLACK_BOT_TOKEN): the same bot token for every request, and no user tokens."""

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

    async def user_token_for(self, team_id: str, user_id: str) -> str | None:
        """None: users connect their own accounts through OAuth, which this mode does not run."""
        return None


class InstallationStoreTokenSource:
    """Multi-workspace mode (OAuth): the workspace's latest bot token and each user's own token.

    With a `rotator`, a token that expires within `refresh_before_minutes` is refreshed (oauth.v2.access with
    grant_type=refresh_token) and the new one saved before it is returned.
    """

    def __init__(
        self,
        store: AsyncInstallationStore,
        rotator: AsyncTokenRotator | None = None,
        *,
        refresh_before_minutes: int = REFRESH_BEFORE_EXPIRY_MINUTES,
    ) -> None:
        self._store = store
        # Our store reads a user's own row alone (one query where slack_sdk's find makes two, reading the
        # workspace's latest bot too): every draft and every Send as me asks for the user's token.
        self._find_user_installation = (
            store.async_find_user_installation if isinstance(store, UserInstallationFinder) else None
        )
        self._rotator = rotator
        self._refresh_before_minutes = refresh_before_minutes

    async def bot_token(self, team_id: str, enterprise_id: str | None = None) -> str:
        """The installed bot's token for the workspace (or its Enterprise Grid org-wide install).

        Raises:
            AppNotInstalledError: (an `UnrecoverableError`) no installation holds a bot token for the workspace,
                for example after `app_uninstalled`: the job fails at once, with no retries.
        """
        bot = await self._store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)
        if bot is None and enterprise_id is not None:
            # An org-wide install is stored under the enterprise alone, with no team id.
            bot = await self._store.async_find_bot(
                enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True
            )
        if bot is not None and self._rotator is not None and bot.bot_refresh_token:
            refreshed = await self._rotator.perform_bot_token_rotation(
                bot=bot, minutes_before_expiration=self._refresh_before_minutes
            )
            if refreshed is not None:
                await self._store.async_save_bot(refreshed)
                log.info("slack.bot_token_refreshed", team_id=team_id)
                bot = refreshed
        token = bot.bot_token if bot is not None else None
        if not token:
            raise AppNotInstalledError()
        return token

    async def user_token_for(self, team_id: str, user_id: str) -> str | None:
        """The token the user granted by connecting their Slack account, refreshed if near expiry; else None."""
        store = self._store
        if self._find_user_installation is not None:
            installation = await self._find_user_installation(team_id=team_id, user_id=user_id)
        else:
            installation = await store.async_find_installation(enterprise_id=None, team_id=team_id, user_id=user_id)
        if installation is None or installation.user_id != user_id or not installation.user_token:
            return None
        if self._rotator is not None and installation.user_refresh_token:
            refreshed = await self._rotator.perform_user_token_rotation(
                installation=installation, minutes_before_expiration=self._refresh_before_minutes
            )
            if refreshed is not None:
                if self._find_user_installation is not None:
                    # Saved back with its bot: the latest one, as slack_sdk's find would have given it.
                    latest = await store.async_find_bot(enterprise_id=None, team_id=team_id)
                    refreshed = with_latest_bot(refreshed, latest)
                await store.async_save(refreshed)
                log.info("slack.user_token_refreshed", team_id=team_id, user_id=user_id)
                installation = refreshed
        return installation.user_token
