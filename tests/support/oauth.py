"""OAuth for tests: the app's credentials, and installing it (bot plus a connected user) as a browser would."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import httpx

from slack_backend.slack.tokens import USER_SCOPES
from slack_backend.store import TokenCipher
from tests.support.pipeline import Pipeline
from tests.support.slack_requests import USER

CLIENT_ID = "1111.2222"
CLIENT_SECRET = "oauth-secret-000"
KEY = TokenCipher.new_key()
OAUTH = {
    "SLACK_BOT_TOKEN": "",
    "SLACK_CLIENT_ID": CLIENT_ID,
    "SLACK_CLIENT_SECRET": CLIENT_SECRET,
    "TOKEN_ENCRYPTION_KEY": KEY,
}
STATE_COOKIE = "slack-app-oauth-state"


async def start_install(client: httpx.AsyncClient) -> tuple[str, str, dict[str, list[str]]]:
    """Open /slack/install as a browser would: the state, its cookie, and the authorize URL's query."""
    page = await client.get("/slack/install")
    assert page.status_code == 200, page.text
    match = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', page.text)
    assert match is not None, page.text
    query = parse_qs(urlparse(match.group(1).replace("&amp;", "&")).query)
    cookie = page.headers["set-cookie"].split(";", 1)[0]
    return query["state"][0], cookie, query


async def finish_install(client: httpx.AsyncClient, code: str, state: str, cookie: str) -> httpx.Response:
    """Slack's redirect back to us after the user approved, carrying the browser's state cookie."""
    return await client.get("/slack/oauth_redirect", params={"code": code, "state": state}, headers={"Cookie": cookie})


async def install(p: Pipeline, *, user_id: str = USER) -> None:
    """Install the app as `user_id`, who also connects their own account (user scopes): both tokens are stored."""
    state, cookie, _ = await start_install(p.client)
    code = p.slack.approve(user_id=user_id, bot_scopes=["commands", "chat:write"], user_scopes=USER_SCOPES)
    done = await finish_install(p.client, code, state, cookie)
    assert done.status_code == 200, done.text
