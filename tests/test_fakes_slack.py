"""The loopback fake Slack Web API answers the real slack_sdk AsyncWebClient like Slack does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import CANNOT_REPLACE_ERROR, RESPONSE_URL_MAX_USES, FakeSlack

BOT_TOKEN = "xoxb-test-token"


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def client(fake_slack: FakeSlack) -> AsyncWebClient:
    # No session is passed: slack_sdk opens and closes one per call, so nothing is left unclosed.
    return AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.base_url)


async def test_auth_test_is_ok_and_recorded_with_the_token(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    """auth.test answers ok with the fake's team and bot user, and the call is recorded with its token."""
    response = await client.auth_test()
    assert response["ok"] is True
    assert response["team_id"] == fake_slack.team_id
    assert response["user_id"] == fake_slack.bot_user_id
    [call] = fake_slack.calls_to("auth.test")
    assert call.token == BOT_TOKEN


async def test_wrong_token_gets_invalid_auth(fake_slack: FakeSlack) -> None:
    """A token other than the configured bot token gets invalid_auth, as Slack answers."""
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as caught:
        await wrong.auth_test()
    assert caught.value.response["error"] == "invalid_auth"


async def test_post_ephemeral_is_recorded_with_its_json_params(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    """chat.postEphemeral (sent as JSON by slack_sdk) is recorded with channel, user, text and thread_ts."""
    response = await client.chat_postEphemeral(
        channel="C123", user="U456", text="Here is your draft", thread_ts="1700000000.000100"
    )
    assert response["ok"] is True
    assert response["message_ts"]
    [call] = fake_slack.calls_to("chat.postEphemeral")
    assert call.content_type == "application/json"
    assert call.token == BOT_TOKEN
    assert call.params["channel"] == "C123"
    assert call.params["user"] == "U456"
    assert call.params["text"] == "Here is your draft"
    assert call.params["thread_ts"] == "1700000000.000100"


async def test_post_message_answers_with_ts_and_form_bodies_are_read(
    client: AsyncWebClient, fake_slack: FakeSlack
) -> None:
    """chat.postMessage answers with channel and ts; a form-encoded call is parsed like a JSON one."""
    posted = await client.chat_postMessage(channel="C123", text="hello", thread_ts="1.0")
    assert posted["channel"] == "C123"
    assert posted["message"]["thread_ts"] == "1.0"

    as_form = await client.api_call("chat.postMessage", data={"channel": "C9", "text": "form body"})
    assert as_form["ok"] is True
    form_call = fake_slack.calls_to("chat.postMessage")[-1]
    assert form_call.content_type == "application/x-www-form-urlencoded"
    assert form_call.params == {"channel": "C9", "text": "form body"}


async def test_conversations_replies_returns_the_registered_thread(
    client: AsyncWebClient, fake_slack: FakeSlack
) -> None:
    """conversations.replies serves a registered thread, pages by cursor, and reports unknown threads."""
    messages = [{"user": "U1", "text": "parent", "ts": "1.0"}, {"user": "U2", "text": "reply", "ts": "1.1"}]
    fake_slack.add_thread("D123", "1.0", messages)
    fake_slack.marketplace_app = True  # Tier 3: more than one read a minute

    whole = await client.conversations_replies(channel="D123", ts="1.0")
    assert [m["text"] for m in whole["messages"]] == ["parent", "reply"]
    assert all(m["thread_ts"] == "1.0" for m in whole["messages"])
    assert whole["has_more"] is False

    first_page = await client.conversations_replies(channel="D123", ts="1.0", limit=1)
    assert first_page["has_more"] is True
    cursor = first_page["response_metadata"]["next_cursor"]
    second_page = await client.conversations_replies(channel="D123", ts="1.0", limit=1, cursor=cursor)
    assert [m["text"] for m in second_page["messages"]] == ["reply"]

    with pytest.raises(SlackApiError) as caught:
        await client.conversations_replies(channel="D123", ts="9.9")
    assert caught.value.response["error"] == "thread_not_found"


async def test_scripted_429_raises_slack_api_error_with_retry_after(
    client: AsyncWebClient, fake_slack: FakeSlack
) -> None:
    """A scripted 429 raises SlackApiError with status 429 and a Retry-After header, then Slack recovers."""
    fake_slack.rate_limit_next("chat.postEphemeral", retry_after_s=7)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postEphemeral(channel="C1", user="U1", text="hi")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert caught.value.response["error"] == "ratelimited"

    again = await client.chat_postEphemeral(channel="C1", user="U1", text="hi")
    assert again["ok"] is True
    assert len(fake_slack.calls_to("chat.postEphemeral")) == 2


async def test_scripted_errors_for_the_next_n_calls(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    """fail_next and server_error_next answer the next N calls of one method only."""
    fake_slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    fake_slack.server_error_next("auth.test")
    for _ in range(2):
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel="C404", text="hi")
        assert refused.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as broken:
        await client.auth_test()
    assert broken.value.response.status_code == 500
    assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"] is True
    assert (await client.auth_test())["ok"] is True


async def test_response_url_receiver_records_json_posts(fake_slack: FakeSlack) -> None:
    """JSON posted to a response_url (by aiohttp or httpx) is recorded per id; a sixth use is refused."""
    url = fake_slack.response_url("abc")
    async with aiohttp.ClientSession() as session, session.post(url, json={"text": "working on it"}) as answer:
        assert answer.status == 200
        assert (await answer.json()) == {"ok": True}
    async with httpx.AsyncClient() as http:
        replaced = await http.post(url, json={"text": "your draft", "replace_original": True})
        assert replaced.status_code == 200
        for _ in range(RESPONSE_URL_MAX_USES - 2):
            await http.post(url, json={"text": "more"})
        too_many = await http.post(url, json={"text": "one too many"})
    assert fake_slack.response_posts["abc"][:2] == [
        {"text": "working on it"},
        {"text": "your draft", "replace_original": True},
    ]
    assert len(fake_slack.response_posts["abc"]) == RESPONSE_URL_MAX_USES
    assert too_many.status_code == 404
    assert too_many.json()["error"] == "used_url"


async def test_shortcut_response_url_refuses_to_replace_the_message_it_was_used_on(fake_slack: FakeSlack) -> None:
    """A message shortcut's response_url takes only posts saying replace_original: false; others are refused."""
    url = fake_slack.response_url("shortcut", replaceable=False)
    async with httpx.AsyncClient() as http:
        replacing = await http.post(url, json={"text": "x", "replace_original": True})
        unsaid = await http.post(url, json={"text": "x"})
        deleting = await http.post(url, json={"delete_original": True, "replace_original": False})
        bad_type = await http.post(url, json={"text": "x", "replace_original": False, "response_type": "loud"})
        fine = await http.post(url, json={"text": "x", "replace_original": False, "response_type": "ephemeral"})
    assert [r.status_code for r in (replacing, unsaid, deleting, bad_type, fine)] == [400, 400, 400, 400, 200]
    assert replacing.json()["error"] == CANNOT_REPLACE_ERROR
    assert len(fake_slack.response_posts["shortcut"]) == 1


async def test_reactions_are_added_once_and_removed_once(fake_slack: FakeSlack) -> None:
    """reactions.add then a second add (already_reacted), remove, then a second remove (no_reaction), as Slack does."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.base_url)
    where = {"channel": "C1", "timestamp": "1.2", "name": "hourglass_flowing_sand"}
    assert (await client.reactions_add(**where))["ok"] is True
    assert fake_slack.reactions == {("C1", "1.2", "hourglass_flowing_sand")}
    with pytest.raises(SlackApiError, match="already_reacted"):
        await client.reactions_add(**where)
    await client.reactions_remove(**where)
    with pytest.raises(SlackApiError, match="no_reaction"):
        await client.reactions_remove(**where)
    assert fake_slack.reactions == set()
