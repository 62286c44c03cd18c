"""`/slack/connect`: a user connects their own Slack account (user scopes only), so drafts use what they can read."""

from __future__ import annotations

from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from slack_backend.slack.tokens import USER_SCOPES

CONNECT_PATH = "/slack/connect"
OAUTH_OFF_TEXT = "Connecting a Slack account needs the app's OAuth mode (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)."


def connect_flow(install_flow: AsyncOAuthFlow) -> AsyncOAuthFlow:
    """The install flow asking for user scopes only: same app, stores and redirect URL (its callback saves it)."""
    main = install_flow.settings
    settings = AsyncOAuthSettings(
        client_id=main.client_id,
        client_secret=main.client_secret,
        # No bot scopes: the workspace installed the bot already; this grants the user's own token.
        scopes=[],
        user_scopes=list(USER_SCOPES),
        installation_store=main.installation_store,
        state_store=main.state_store,
        install_path=CONNECT_PATH,
        redirect_uri_path=main.redirect_uri_path,
        redirect_uri=main.redirect_uri,
        state_cookie_name=main.state_cookie_name,
    )
    return AsyncOAuthFlow(client=install_flow.client, logger=install_flow.logger, settings=settings)


async def slack_connect(request: Request) -> Response:
    """Start the connect flow: Slack's authorize page for the user scopes, with a one-time state and its cookie."""
    install_flow: AsyncOAuthFlow | None = request.app.state.bolt.oauth_flow
    if install_flow is None:
        return PlainTextResponse(OAUTH_OFF_TEXT, status_code=404)
    bolt_request = to_async_bolt_request(request, body=b"")
    return to_starlette_response(await connect_flow(install_flow).handle_installation(bolt_request))
