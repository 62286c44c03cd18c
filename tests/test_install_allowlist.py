"""SLACK_ALLOWED_TEAMS at install time: a workspace not served gets a plain refusal page, and no token is kept."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text

from slack_backend.slack.tokens import USER_SCOPES
from slack_backend.store import create_engine
from slack_backend.web.install_guard import REFUSED_INSTALL_TEXT
from tests.support.oauth import CLIENT_ID, CLIENT_SECRET, OAUTH, finish_install, start_install
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import TEAM, USER


async def stored_rows(tmp_path: Path) -> tuple[int, int]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.connect() as conn:
            installs = await conn.scalar(text("SELECT count(*) FROM slack_installations"))
            bots = await conn.scalar(text("SELECT count(*) FROM slack_bots"))
    finally:
        await engine.dispose()
    return int(installs or 0), int(bots or 0)


async def test_an_install_from_a_workspace_not_allowed_stores_nothing_and_revokes(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """The OAuth callback for a team outside SLACK_ALLOWED_TEAMS: 403 with a plain page, no row stored, and both
    fresh tokens revoked (auth.revoke) so they cannot be used either."""
    async with pipeline(**OAUTH, SLACK_ALLOWED_TEAMS="T0ONLYUS,E0ONLYUS") as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        state, cookie, _ = await start_install(p.client)
        code = p.slack.approve(user_id=USER, bot_scopes=["commands", "chat:write"], user_scopes=USER_SCOPES)
        page = await finish_install(p.client, code, state, cookie)
        revoked = list(p.slack.reads.revoked)
    assert page.status_code == 403
    assert html.escape(REFUSED_INSTALL_TEXT) in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert await stored_rows(tmp_path) == (0, 0)
    assert sorted(token.split("-")[0] for token in revoked) == ["xoxb", "xoxp"]
    for token in revoked:
        with pytest.raises(SlackApiError) as caught:
            await AsyncWebClient(token=token, base_url=p.slack.base_url).auth_test()
        assert caught.value.response["error"] == "token_revoked"


async def test_an_install_from_an_allowed_workspace_is_stored(pipeline: PipelineFactory, tmp_path: Path) -> None:
    """The same install from a workspace SLACK_ALLOWED_TEAMS names completes and keeps its tokens."""
    async with pipeline(**OAUTH, SLACK_ALLOWED_TEAMS=f"T0ONLYUS,{TEAM}") as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        state, cookie, _ = await start_install(p.client)
        code = p.slack.approve(user_id=USER, bot_scopes=["commands", "chat:write"], user_scopes=USER_SCOPES)
        page = await finish_install(p.client, code, state, cookie)
    assert page.status_code == 200, page.text
    assert p.slack.reads.revoked == []
    assert await stored_rows(tmp_path) == (1, 1)
