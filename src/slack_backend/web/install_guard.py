"""The OAuth install flow that refuses workspaces outside SLACK_ALLOWED_TEAMS: no token is stored, the fresh
ones are revoked, and the installer sees a plain page saying why."""

from __future__ import annotations

import contextlib
import html

from slack_bolt.error import BoltError
from slack_bolt.oauth.async_callback_options import AsyncCallbackOptions, AsyncFailureArgs, AsyncSuccessArgs
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.logging import get_logger

log = get_logger(__name__)

REFUSED_INSTALL_TEXT = (
    "This app isn't enabled for your Slack workspace, so it was not installed and no access was kept. "
    "Please ask the person who runs it."
)


class InstallRefusedError(BoltError):
    """An install (or account connection) from a workspace the operator does not serve."""


def allowed_install(installation: Installation, allowed: frozenset[str]) -> bool:
    """Whether SLACK_ALLOWED_TEAMS (empty: every workspace) serves the installation's workspace or org."""
    return not allowed or installation.team_id in allowed or installation.enterprise_id in allowed


class AllowedTeamsOAuthFlow(AsyncOAuthFlow):
    """Bolt's OAuth flow, storing an installation only for an allowed workspace or Enterprise Grid org."""

    def __init__(self, *, client: AsyncWebClient | None, settings: AsyncOAuthSettings, allowed: frozenset[str]):
        settings.callback_options = AsyncCallbackOptions(success=_success, failure=_failure)
        super().__init__(client=client, settings=settings)
        self.allowed = allowed

    async def store_installation(self, request: AsyncBoltRequest, installation: Installation) -> None:
        """Store the installation, or refuse it (raising InstallRefusedError) after revoking its fresh tokens."""
        if allowed_install(installation, self.allowed):
            await super().store_installation(request, installation)
            return
        log.warning(
            "install refused: workspace not in SLACK_ALLOWED_TEAMS",
            team=installation.team_id,
            enterprise=installation.enterprise_id,
        )
        for token in (installation.bot_token, installation.user_token):
            if token:
                # Best effort: the token is never stored either way, and a failed revoke leaves it unused.
                with contextlib.suppress(Exception):
                    await self.client.auth_revoke(token=token)
        raise InstallRefusedError("workspace not allowed")


async def _success(args: AsyncSuccessArgs) -> BoltResponse:
    return await args.default.success(args)


async def _failure(args: AsyncFailureArgs) -> BoltResponse:
    if isinstance(args.error, InstallRefusedError):
        page = f"<!DOCTYPE html><html><body><p>{html.escape(REFUSED_INSTALL_TEXT)}</p></body></html>"
        return BoltResponse(status=403, body=page, headers={"Content-Type": "text/html; charset=utf-8"})
    return await args.default.failure(args)
