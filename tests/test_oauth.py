"""OAuth end to end through the real web app and the fake Slack's oauth.v2.access: install (bot and user scopes),
tokens stored encrypted, a replayed state refused, uninstall and revocation deleting tokens, token rotation."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from sqlalchemy import text

from slack_backend.queue import JobState
from slack_backend.slack.tokens import USER_SCOPES, InstallationStoreTokenSource, token_rotator
from slack_backend.store import TokenCipher, create_engine, installation_store
from slack_backend.store.crypto import is_encrypted
from tests.fakes.slack_server import FakeSlack
from tests.support.databases import create_legacy_schema
from tests.support.oauth import (
    CLIENT_ID,
    CLIENT_SECRET,
    KEY,
    OAUTH,
    finish_install,
    install,
    start_install,
)
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import (
    BOT_TOKEN,
    CHANNEL,
    EVENT_ID,
    GROUP_DM,
    TEAM,
    THREAD_TS,
    USER,
    mention_body,
    post_signed,
)
from tests.test_work_once import ephemerals, finished


@asynccontextmanager
async def store_of(tmp_path: Path) -> AsyncIterator[AsyncInstallationStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        yield installation_store(engine, CLIENT_ID, TokenCipher([KEY]))
    finally:
        await engine.dispose()


async def test_install_flow_stores_encrypted_tokens_and_refuses_a_replayed_state(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """Install asks for bot and user scopes; the tokens land encrypted and work; the same state again is refused."""
    async with pipeline(**OAUTH, PUBLIC_URL="https://drafts.example.com") as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        state, cookie, query = await start_install(p.client)
        assert set(query["user_scope"][0].split(",")) == set(USER_SCOPES)
        code = p.slack.approve(user_id=USER, bot_scopes=["commands", "chat:write"], user_scopes=USER_SCOPES)

        done = await finish_install(p.client, code, state, cookie)
        assert done.status_code == 200, done.text
        replay = await finish_install(p.client, p.slack.approve(user_id=USER), state, cookie)
        assert replay.status_code != 200
        assert len(p.slack.calls_to("oauth.v2.access")) == 1, "a replayed state never reaches the code exchange"

        # The installed bot token is what the worker uses.
        p.slack.add_thread(CHANNEL, THREAD_TS, [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}])
        assert (await post_signed(p.client, mention_body())).status_code == 200
        job = await finished(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    [draft], _ = ephemerals(p.slack)
    assert draft.token is not None
    assert draft.token in p.slack.issued_tokens
    assert draft.token.startswith("xoxb-")
    assert "slack/connect" not in str(draft.params["blocks"]), "the thread was read: no connect link"
    async with store_of(tmp_path) as store:
        source = InstallationStoreTokenSource(store)
        user_token = await source.user_token_for(TEAM, USER)
        assert user_token is not None
        assert user_token.startswith("xoxp-")
        assert await source.user_token_for(TEAM, "U0NOBODY") is None
        async with store.engine.connect() as conn:  # type: ignore[attr-defined]
            raw = (await conn.execute(text("SELECT bot_token, user_token FROM slack_installations"))).one()
    assert all(is_encrypted(value) for value in raw)


def event(kind: str, **fields: object) -> tuple[bytes, str]:
    body = {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP1",
        "type": "event_callback",
        "event_id": f"Ev{kind}",
        "event_time": int(time.time()),
        "event": {"type": kind, **fields},
    }
    return json.dumps(body).encode(), "application/json"


async def test_uninstall_deletes_tokens_and_queued_jobs_fail_at_once(pipeline: PipelineFactory, tmp_path: Path) -> None:
    """app_uninstalled removes every token of the workspace; a job queued for it then fails at once, unpaid."""
    async with pipeline(**OAUTH, with_worker=False) as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        await install(p)
        p.slack.add_thread(CHANNEL, THREAD_TS, [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}])
        assert (await post_signed(p.client, mention_body())).status_code == 200  # queued, no worker yet

        assert (await post_signed(p.client, event("app_uninstalled"))).status_code == 200

        async with store_of(tmp_path) as store:
            assert await store.async_find_bot(enterprise_id=None, team_id=TEAM) is None
            assert await InstallationStoreTokenSource(store).user_token_for(TEAM, USER) is None
    async with pipeline(**OAUTH) as p:
        job = await finished(p.queue, EVENT_ID)
    assert job.state is JobState.FAILED
    assert job.attempts_made == 1
    assert "not installed" in (job.failed_reason or "")
    assert p.claude.message_requests == []


async def test_tokens_revoked_deletes_the_users_token(pipeline: PipelineFactory, tmp_path: Path) -> None:
    """tokens_revoked naming a user deletes that user's own token; the bot token stays."""
    async with pipeline(**OAUTH, with_worker=False) as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        await install(p)
        revoked = event("tokens_revoked", tokens={"oauth": [USER], "bot": []})
        assert (await post_signed(p.client, revoked)).status_code == 200

        async with store_of(tmp_path) as store:
            source = InstallationStoreTokenSource(store)
            assert await source.user_token_for(TEAM, USER) is None
            assert (await source.bot_token(TEAM)).startswith("xoxb-")


@asynccontextmanager
async def rotating_source(
    slack: FakeSlack, tmp_path: Path
) -> AsyncIterator[tuple[AsyncInstallationStore, InstallationStoreTokenSource]]:
    """The installation store on a new database and a token source over it, with Slack's token rotation on."""
    from slack_backend.config import load_settings
    from slack_backend.store import create_tables

    slack.enable_oauth(CLIENT_ID, CLIENT_SECRET, rotate_tokens=True)  # new tokens live 12 h
    settings = load_settings({**OAUTH, "SLACK_API_URL": slack.base_url})
    async with store_of(tmp_path) as store:
        await create_tables(store.engine)  # type: ignore[attr-defined]
        yield store, InstallationStoreTokenSource(store, token_rotator(settings))


def expiring_bot(slack: FakeSlack) -> dict[str, Any]:
    """A bot's fields (for a Bot or an Installation), its token inside the 10-minute refresh window."""
    return {
        "bot_token": slack.issue_token("xoxbe", expires_in_s=300),
        "bot_refresh_token": slack.issue_refresh_token("bot"),
        "bot_token_expires_in": 300,
        "bot_id": "B0BOT1",
        "bot_user_id": "U0FAKEBOT",
    }


def expiring_user(slack: FakeSlack) -> dict[str, Any]:
    """The requester's own token fields, the token inside the refresh window."""
    return {
        "user_id": USER,
        "user_token": slack.issue_token("xoxpe", expires_in_s=300),
        "user_refresh_token": slack.issue_refresh_token("user"),
        "user_token_expires_in": 300,
    }


async def test_expiring_bot_and_user_tokens_are_refreshed_before_use(
    slack: FakeSlack, settings_for: object, tmp_path: Path
) -> None:
    """With token rotation on, a bot or user token near expiry is refreshed (refresh grant), saved, and returned."""
    async with rotating_source(slack, tmp_path) as (store, source):
        bot = expiring_bot(slack)
        old_bot = bot["bot_token"]
        await store.async_save_bot(
            Bot(app_id="A0APP1", enterprise_id=None, team_id=TEAM, **bot, installed_at=time.time())
        )

        new_bot = await source.bot_token(TEAM)
        again = await source.bot_token(TEAM)
        user = expiring_user(slack)
        old_user = user["user_token"]
        await store.async_save(
            Installation(app_id="A0APP1", enterprise_id=None, team_id=TEAM, **user, installed_at=time.time())
        )
        new_user = await source.user_token_for(TEAM, USER)
        user_again = await source.user_token_for(TEAM, USER)

    assert new_bot != old_bot
    assert new_bot in slack.issued_tokens
    assert again == new_bot, "the refreshed token was saved (refresh tokens work once)"
    assert new_user is not None
    assert new_user != old_user
    assert new_user.startswith("xoxpe-")
    assert user_again == new_user
    refreshes = slack.calls_to("oauth.v2.access")
    assert [call.params["grant_type"] for call in refreshes] == ["refresh_token", "refresh_token"], "one per token"


async def test_a_refreshed_user_token_is_saved_with_the_workspaces_latest_bot(
    slack: FakeSlack, settings_for: object, tmp_path: Path
) -> None:
    """A user's token is read from their own row alone, whose bot fields may be older than the workspace's bot; when
    it is refreshed and saved back, the save carries the latest bot, so a bot token rotated since is not undone."""
    async with rotating_source(slack, tmp_path) as (store, source):
        bot, user = expiring_bot(slack), expiring_user(slack)
        first_bot, first_user = bot["bot_token"], user["user_token"]
        # One install: the installation row and the bot row, both near expiry.
        await store.async_save(
            Installation(app_id="A0APP1", enterprise_id=None, team_id=TEAM, **bot, **user, installed_at=time.time())
        )
        rotated_bot = await source.bot_token(TEAM)  # saved in the bot row; the installation row keeps first_bot
        own = await store.async_find_user_installation(team_id=TEAM, user_id=USER)  # type: ignore[attr-defined]
        assert own.bot_token == first_bot, "the user's own row still names the bot it was installed with"
        rotated_user = await source.user_token_for(TEAM, USER)
        latest = await store.async_find_bot(enterprise_id=None, team_id=TEAM)
        bot_again = await source.bot_token(TEAM)

    assert rotated_bot != first_bot
    assert rotated_user is not None
    assert rotated_user != first_user
    assert latest is not None
    assert latest.bot_token == rotated_bot, "the user token's save kept the rotated bot token"
    assert bot_again == rotated_bot
    refreshes = slack.calls_to("oauth.v2.access")
    assert len(refreshes) == 2, "one refresh each, none repeated"


async def test_connect_link_stores_a_users_own_token(pipeline: PipelineFactory, tmp_path: Path) -> None:
    """/slack/connect asks for user scopes only; after approval the user's token is found, the bot token unchanged."""
    async with pipeline(**OAUTH, with_worker=False) as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        await install(p)
        async with store_of(tmp_path) as store:
            bot_before = await InstallationStoreTokenSource(store).bot_token(TEAM)

        page = await p.client.get("/slack/connect")
        assert page.status_code == 200, page.text
        match = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', page.text)
        assert match is not None, page.text
        query = parse_qs(urlparse(match.group(1).replace("&amp;", "&")).query, keep_blank_values=True)
        assert query["scope"] == [""]
        assert set(query["user_scope"][0].split(",")) == set(USER_SCOPES)
        code = p.slack.approve(user_id="U0USER2", bot_scopes=(), user_scopes=USER_SCOPES)
        cookie = page.headers["set-cookie"].split(";", 1)[0]
        done = await finish_install(p.client, code, query["state"][0], cookie)
        assert done.status_code == 200, done.text

        async with store_of(tmp_path) as store:
            source = InstallationStoreTokenSource(store)
            connected = await source.user_token_for(TEAM, "U0USER2")
            assert connected is not None
            assert connected.startswith("xoxp-")
            assert await source.bot_token(TEAM) == bot_before


async def test_first_start_encrypts_tokens_saved_in_plaintext_by_the_old_version(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """A database from before migrations, its bot token in plaintext: the first start migrates it, encrypts the
    token, and the workspace keeps working with it."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await create_legacy_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO slack_bots (client_id, app_id, team_id, bot_token, bot_id, bot_user_id, bot_scopes,"
                    " is_enterprise_install, installed_at) VALUES"
                    " (:client, 'A0APP1', :team, :token, 'B0BOT1', 'U0FAKEBOT', 'commands', 0, '2026-01-01 00:00:00')"
                ),
                {"client": CLIENT_ID, "team": TEAM, "token": BOT_TOKEN},
            )
        async with pipeline(**OAUTH) as p:
            # A group DM: its thread is one the (old, bot-only) install may read.
            p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}], mpim=True)
            assert (await post_signed(p.client, mention_body(channel=GROUP_DM))).status_code == 200
            job = await finished(p.queue, EVENT_ID)
        async with engine.connect() as conn:
            stored = await conn.scalar(text("SELECT bot_token FROM slack_bots"))
    finally:
        await engine.dispose()
    assert job.state is JobState.COMPLETED
    [draft], _ = ephemerals(p.slack)
    assert draft.token == BOT_TOKEN
    assert stored is not None
    assert is_encrypted(stored)
    assert TokenCipher([KEY]).decrypt(stored) == BOT_TOKEN


async def test_draft_offers_the_connect_link_when_the_thread_cannot_be_read(pipeline: PipelineFactory) -> None:
    """A channel thread, and the user has not connected their account (an admin installed the app): the bot may not
    read it, so it is not asked for; the draft is still made, and links to /slack/connect."""
    async with pipeline(**OAUTH, PUBLIC_URL="https://drafts.example.com") as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        await install(p, user_id="U0ADMIN1")
        p.slack.add_thread(CHANNEL, THREAD_TS, [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}])
        assert (await post_signed(p.client, mention_body())).status_code == 200
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    assert p.slack.calls_to("conversations.replies") == []
    [draft], _ = ephemerals(p.slack)
    assert "https://drafts.example.com/slack/connect" in str(draft.params["blocks"])


async def test_a_connected_user_whose_token_cannot_read_gets_no_connect_link(pipeline: PipelineFactory) -> None:
    """The user connected, but their token cannot read the thread (channel_not_found): the draft says it was made
    without the conversation and offers no link they already used."""
    async with pipeline(**OAUTH, PUBLIC_URL="https://drafts.example.com") as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        await install(p)
        # No thread registered: the fake answers channel_not_found, as Slack does for a channel the user is not in.
        assert (await post_signed(p.client, mention_body())).status_code == 200
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    [read] = p.slack.calls_to("conversations.replies")
    assert read.token is not None
    assert read.token.startswith("xoxp-")
    [draft], _ = ephemerals(p.slack)
    assert "slack/connect" not in str(draft.params["blocks"])
    assert "based on your message alone" in str(draft.params["blocks"])
