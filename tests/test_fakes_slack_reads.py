"""The fake Slack refuses thread and member reads the way Slack does today, through the real slack_sdk client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_reads import BOT_REFUSED_ERROR
from tests.fakes.slack_server import FakeSlack

BOT_TOKEN = "xoxb-test-token"
THREAD = [{"user": "U1", "text": "parent", "ts": "1.0"}, {"user": "U2", "text": "reply", "ts": "1.1"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.marketplace_app = True  # these tests are about who may read; the read limit has its own test
        yield fake


def client_for(fake: FakeSlack, token: str) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.base_url)


async def error_of(call: object) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call  # type: ignore[misc]
    return str(caught.value.response["error"])


async def test_a_bot_token_reads_threads_only_in_dms_and_group_dms(fake: FakeSlack) -> None:
    """conversations.replies with a bot token: DM and group DM threads are served; channel threads are refused."""
    for channel in ("D0DM", "G0MPIM", "C0PUBLIC", "G0PRIVATE"):
        fake.add_thread(channel, "1.0", THREAD, mpim=channel == "G0MPIM")
    bot = client_for(fake, BOT_TOKEN)
    for readable in ("D0DM", "G0MPIM"):
        assert [m["text"] for m in (await bot.conversations_replies(channel=readable, ts="1.0"))["messages"]] == [
            "parent",
            "reply",
        ]
    for refused in ("C0PUBLIC", "G0PRIVATE"):
        assert await error_of(bot.conversations_replies(channel=refused, ts="1.0")) == BOT_REFUSED_ERROR


async def test_a_user_token_reads_channel_threads_with_the_history_scope(fake: FakeSlack) -> None:
    """A connected user's token reads a channel thread with channels:history; without it, missing_scope."""
    fake.enable_oauth("1.2", "secret")
    fake.add_thread("C0PUBLIC", "1.0", THREAD)
    fake.add_thread("G0PRIVATE", "1.0", THREAD)
    granted = await AsyncWebClient(base_url=fake.base_url).oauth_v2_access(
        client_id="1.2", client_secret="secret", code=fake.approve(user_id="U9", user_scopes=["channels:history"])
    )
    user = client_for(fake, granted["authed_user"]["access_token"])
    assert (await user.conversations_replies(channel="C0PUBLIC", ts="1.0"))["ok"] is True
    assert await error_of(user.conversations_replies(channel="G0PRIVATE", ts="1.0")) == "missing_scope"
    assert await error_of(user.users_info(user="U1")) == "missing_scope"


async def test_a_non_marketplace_app_gets_15_messages_and_one_read_per_window(fake: FakeSlack) -> None:
    """Outside the Marketplace: at most 15 messages a call, one call per window per workspace, then 429."""
    fake.marketplace_app = False
    fake.limit_thread_reads(1, 1.0)
    fake.add_thread("D0DM", "1.0", [{"user": "U1", "text": f"m{i}", "ts": f"1.{i}"} for i in range(40)])
    bot = client_for(fake, BOT_TOKEN)
    first = await bot.conversations_replies(channel="D0DM", ts="1.0", limit=200)
    assert len(first["messages"]) == 15
    started = time.monotonic()
    with pytest.raises(SlackApiError) as caught:
        await bot.conversations_replies(channel="D0DM", ts="1.0", cursor=first["response_metadata"]["next_cursor"])
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "1"
    assert len(fake.reads.refused_429_at) == 1
    await asyncio.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    assert (await bot.conversations_replies(channel="D0DM", ts="1.0"))["ok"] is True, "a new window serves again"


async def test_users_info_knows_members_and_refuses_strangers(fake: FakeSlack) -> None:
    """users.info gives a member's names and time zone; an unknown id is user_not_found."""
    fake.add_person("U1", "ana", display_name="Ana Lima", tz="Europe/Lisbon")
    bot = client_for(fake, BOT_TOKEN)
    user = (await bot.users_info(user="U1"))["user"]
    assert (user["profile"]["display_name"], user["tz"]) == ("Ana Lima", "Europe/Lisbon")
    assert await error_of(bot.users_info(user="U0NOBODY")) == "user_not_found"


async def test_auth_revoke_ends_a_token(fake: FakeSlack) -> None:
    """auth.revoke answers revoked; the token is refused from then on."""
    token = fake.issue_token("xoxb")
    client = client_for(fake, token)
    assert (await client.auth_revoke())["revoked"] is True
    assert await error_of(client.auth_test()) == "token_revoked"
