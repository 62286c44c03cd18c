"""Slack ingress end to end: the real Starlette app and Bolt, signed requests, a real Redis, and a fake Slack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from redis.asyncio import Redis
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore
from structlog.testing import capture_logs

from slack_backend.jobs.queues import DIRECT_PRIORITY, ai_responses_queue
from slack_backend.queue import Job, JobState, Queue, create_redis
from slack_backend.slack.signing import sign_request
from slack_backend.store import TokenCipher
from slack_backend.web import MAX_SLACK_BODY_BYTES, create_app, web_state
from slack_backend.web.ingress import (
    ACK_TEXT,
    MENTION_USAGE_TEXT,
    NOT_ALLOWED_TEXT,
    OAUTH_SCOPES,
    TRY_AGAIN_TEXT,
    too_long_text,
)
from tests.fakes.slack_server import FakeSlack
from tests.support.app import Serve, SettingsFactory
from tests.support.slack_requests import (
    CHANNEL,
    CLOSED_REDIS_URL,
    EVENT_ID,
    SECRET,
    TEAM,
    THREAD_TS,
    TRIGGER_ID,
    TS,
    USER,
    command_body,
    mention_body,
    post_signed,
    shortcut_body,
)


@pytest.fixture
def fake_slack(slack: FakeSlack) -> FakeSlack:
    """The fake Slack the served app talks to (the `slack` fixture), under the name the edge's tests use."""
    return slack


@pytest.fixture
def queue(redis_client: Redis, make_settings: SettingsFactory) -> Queue:
    """The ai-responses queue the app writes to, read through the test's own client."""
    return ai_responses_queue(redis_client, make_settings())


async def waiting_jobs(queue: Queue) -> list[Job]:
    return await queue.get_jobs(JobState.WAITING)


async def test_message_shortcut_is_acked_quickly_and_queues_one_job(
    serve: Serve, slack: FakeSlack, queue: Queue
) -> None:
    """A signed "Draft a reply" shortcut is acked 200 fast and leaves one job, id = trigger_id, group = team."""
    async with serve() as client:
        with capture_logs() as logs:
            started = time.monotonic()
            response = await post_signed(client, shortcut_body(slack))
            elapsed_s = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed_s < 1.0
    [job] = await waiting_jobs(queue)
    assert job.id == TRIGGER_ID
    assert job.group == TEAM
    assert job.priority == DIRECT_PRIORITY
    assert job.data == {
        "workspace_id": TEAM,
        "user_id": USER,
        "channel_id": CHANNEL,
        "trigger": "message_action",
        "trigger_text": "Can you send me the Q3 numbers?",
        "message_ts": TS,
        "thread_ts": THREAD_TS,
        "trigger_user_id": "U0OTHER1",  # who wrote the message: the model is told whom it answers
        "response_url": slack.response_url("shortcut1"),
        "request_id": response.headers["X-Request-ID"],
        "context_messages": [],
    }
    queued = [entry for entry in logs if entry["event"] == "request queued"]
    assert (queued[0]["job_id"], queued[0]["team"], queued[0]["user"]) == (TRIGGER_ID, TEAM, USER)
    assert "Q3 numbers" not in repr(logs)


async def test_slash_command_queues_one_job_and_acks_ephemerally(serve: Serve, slack: FakeSlack, queue: Queue) -> None:
    """A signed /draft command is acked with the ephemeral "Drafting" text and queues one job without a thread."""
    async with serve() as client:
        response = await post_signed(client, command_body(slack))
    assert response.status_code == 200
    assert response.json() == {"text": ACK_TEXT, "response_type": "ephemeral"}
    [job] = await waiting_jobs(queue)
    assert (job.id, job.group) == (TRIGGER_ID, TEAM)
    assert job.data["trigger"] == "slash_command"
    assert job.data["trigger_text"] == "Can you review my PR today?"
    assert (job.data["workspace_id"], job.data["user_id"], job.data["channel_id"]) == (TEAM, USER, CHANNEL)
    assert job.data["response_url"] == slack.response_url("command1")
    assert "message_ts" not in job.data
    assert "thread_ts" not in job.data


async def test_app_mention_queues_one_job_under_its_event_id(serve: Serve, queue: Queue) -> None:
    """A mention in a thread is queued under its event_id; its words (mention stripped) are the instruction."""
    async with serve() as client:
        response = await post_signed(client, mention_body())
    assert response.status_code == 200
    [job] = await waiting_jobs(queue)
    assert (job.id, job.group) == (EVENT_ID, TEAM)
    assert job.data["trigger"] == "mention"
    assert job.data["instruction"] == "how should I answer this?"
    assert job.data.get("trigger_text", "") == "", "the words are not the message to reply to"
    assert (job.data["message_ts"], job.data["thread_ts"]) == (TS, THREAD_TS)
    assert (job.data["workspace_id"], job.data["user_id"], job.data["channel_id"]) == (TEAM, USER, CHANNEL)
    assert "response_url" not in job.data


async def test_retried_event_deliveries_create_one_job(serve: Serve, queue: Queue) -> None:
    """The same event delivered three times (X-Slack-Retry-Num 1 and 2 on the re-deliveries) leaves one job."""
    async with serve() as client:
        statuses = [(await post_signed(client, mention_body())).status_code]
        for retry_num in (1, 2):
            retry = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
            statuses.append((await post_signed(client, mention_body(), headers=retry)).status_code)
    assert statuses == [200, 200, 200]
    assert (await queue.counts())[JobState.WAITING] == 1
    assert [job.id for job in await waiting_jobs(queue)] == [EVENT_ID]


async def test_duplicate_shortcut_delivery_creates_one_job(serve: Serve, slack: FakeSlack, queue: Queue) -> None:
    """A shortcut delivered twice with the same trigger_id is acked both times and queued once."""
    async with serve() as client:
        first = await post_signed(client, shortcut_body(slack))
        second = await post_signed(client, shortcut_body(slack))
    assert (first.status_code, second.status_code) == (200, 200)
    assert (await queue.counts())[JobState.WAITING] == 1


@pytest.mark.parametrize(
    "forgery",
    ["forged signature", "wrong secret", "stale timestamp", "future timestamp", "missing headers"],
)
async def test_unverified_requests_get_401_and_queue_nothing(
    serve: Serve, slack: FakeSlack, queue: Queue, forgery: str
) -> None:
    """Requests whose signature does not verify (bad, wrong secret, over 5 minutes off, absent) get 401, no job."""
    body, content_type = command_body(slack)
    now_s = int(time.time())
    headers = {**sign_request(SECRET, body), "Content-Type": content_type}
    if forgery == "forged signature":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif forgery == "wrong secret":
        headers.update(sign_request("not-the-secret", body))
    elif forgery == "stale timestamp":
        headers.update(sign_request(SECRET, body, now_s - 6 * 60))
    elif forgery == "future timestamp":
        headers.update(sign_request(SECRET, body, now_s + 6 * 60))
    else:
        headers = {"Content-Type": content_type}
    async with serve() as client:
        response = await client.post("/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    assert sum((await queue.counts()).values()) == 0


async def test_body_over_one_megabyte_gets_413(serve: Serve, queue: Queue) -> None:
    """A body over 1 MB is refused with 413, whether it declares its length or streams it in chunks."""
    big = b"payload=" + b"x" * MAX_SLACK_BODY_BYTES

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    async with serve() as client:
        declared = await post_signed(client, (big, "application/x-www-form-urlencoded"))
        streamed = await client.post(
            "/slack/events",
            content=chunks(),
            headers={**sign_request(SECRET, big), "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert "content-length" not in streamed.request.headers
    assert sum((await queue.counts()).values()) == 0


async def test_redis_down_event_gets_5xx_and_command_gets_try_again(serve: Serve, slack: FakeSlack) -> None:
    """With Redis unreachable, an event is answered 5xx (Slack re-delivers) and a command is told to try again."""
    async with serve(REDIS_URL=CLOSED_REDIS_URL) as client:
        event = await post_signed(client, mention_body())
        command = await post_signed(client, command_body(slack))
    assert event.status_code == 503
    assert command.status_code == 200
    assert command.json()["text"] == TRY_AGAIN_TEXT


async def test_redis_down_shortcut_is_acked_and_the_user_told_via_response_url(serve: Serve, slack: FakeSlack) -> None:
    """With Redis unreachable, a shortcut is acked 200 and the try-again note is posted to its response_url."""
    async with serve(REDIS_URL=CLOSED_REDIS_URL) as client:
        response = await post_signed(client, shortcut_body(slack))
    assert response.status_code == 200
    [note] = slack.response_posts["shortcut1"]
    assert note["text"] == TRY_AGAIN_TEXT
    assert note["response_type"] == "ephemeral"


async def test_oversize_text_gets_a_plain_message_and_no_job(serve: Serve, slack: FakeSlack, queue: Queue) -> None:
    """Text over MAX_TRIGGER_TEXT_CHARS gets a plain "too long" message (ack or response_url) and no job."""
    too_long = "x" * 101
    async with serve(MAX_TRIGGER_TEXT_CHARS="100") as client:
        command = await post_signed(client, command_body(slack, text=too_long))
        shortcut = await post_signed(client, shortcut_body(slack, text=too_long))
        mention = await post_signed(client, mention_body(text=f"<@U0FAKEBOT> {too_long}"))
    assert command.status_code == 200
    assert command.json()["text"] == too_long_text(100)
    assert too_long_text(100) == "Your message is too long to draft a reply for (limit 100 characters)."
    assert shortcut.status_code == 200
    assert [post["text"] for post in slack.response_posts["shortcut1"]] == [too_long_text(100)]
    assert mention.status_code == 200
    assert sum((await queue.counts()).values()) == 0


async def test_empty_slash_command_gets_usage_help(serve: Serve, slack: FakeSlack, queue: Queue) -> None:
    """A slash command with no text is answered with usage help and queues nothing."""
    async with serve() as client:
        response = await post_signed(client, command_body(slack, text="  "))
    assert response.status_code == 200
    assert "/draft" in response.json()["text"]
    assert sum((await queue.counts()).values()) == 0


async def test_bot_mentions_and_subtypes_are_acked_and_ignored(serve: Serve, queue: Queue) -> None:
    """Mentions from bots or with a message subtype, and plain message events, are acked 200 and queue nothing."""
    message_event = json.dumps(
        {
            "team_id": TEAM,
            "type": "event_callback",
            "event_id": "Ev0MSG",
            "event": {"type": "message", "user": USER, "text": "hi", "ts": TS, "channel": CHANNEL},
        }
    ).encode()
    async with serve() as client:
        from_bot = await post_signed(client, mention_body(bot_id="B0OTHER"))
        edited = await post_signed(client, mention_body(subtype="message_changed"))
        message = await post_signed(client, (message_event, "application/json"))
    assert [r.status_code for r in (from_bot, edited, message)] == [200, 200, 200]
    assert sum((await queue.counts()).values()) == 0


async def test_healthz_is_always_ok(serve: Serve) -> None:
    """/healthz answers 200 {"status": "ok"} even when Redis is unreachable."""
    async with serve(REDIS_URL=CLOSED_REDIS_URL) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_follows_redis(serve: Serve) -> None:
    """/readyz answers 200 while Redis answers PING, and 503 with a redis reason when it does not."""
    async with serve() as client:
        up = await client.get("/readyz")
    async with serve(REDIS_URL=CLOSED_REDIS_URL) as client:
        down = await client.get("/readyz")
    assert (up.status_code, up.json()["status"]) == (200, "ok")
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert down.json()["reason"].startswith("redis: ")


async def test_oauth_routes_are_404_in_single_workspace_mode(serve: Serve) -> None:
    """Without SLACK_CLIENT_ID the install and redirect routes answer 404 saying OAuth is off."""
    async with serve() as client:
        install = await client.get("/slack/install")
        redirect = await client.get("/slack/oauth_redirect")
    assert (install.status_code, redirect.status_code) == (404, 404)
    assert "OAuth is not enabled" in install.text


async def test_request_id_is_echoed_or_generated(serve: Serve) -> None:
    """A plain X-Request-ID is echoed back; a missing or unsafe one is replaced by a generated id."""
    async with serve() as client:
        given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        unsafe = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
        missing = await client.get("/healthz")
    assert given.headers["X-Request-ID"] == "abc-123"
    assert unsafe.headers["X-Request-ID"] != "bad id\twith tab"
    assert len(missing.headers["X-Request-ID"]) == 32


async def test_offline_demo_starts_with_a_random_signing_secret_and_no_token(
    make_settings: SettingsFactory, slack: FakeSlack, redis_url: str
) -> None:
    """Offline demo (no signing secret, no token): the app starts, and only its random secret's requests queue."""
    settings = make_settings(SLACK_SIGNING_SECRET="", SLACK_BOT_TOKEN="")
    assert settings.slack_signing_secret is None
    assert settings.slack_bot_token is None
    redis = create_redis(redis_url)
    app = create_app(settings, redis=redis)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            secret = web_state(app).signing_secret
            assert secret != SECRET
            assert app.state.signing_secret == secret
            response = await post_signed(client, command_body(slack), secret=secret)
            refused = await post_signed(client, command_body(slack))
        assert response.status_code == 200
        assert refused.status_code == 401
        assert (await ai_responses_queue(redis, settings).counts())[JobState.WAITING] == 1
    finally:
        await redis.aclose()


async def test_url_verification_challenge_is_answered(serve: Serve) -> None:
    """Slack's url_verification handshake gets its challenge back."""
    body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "legacy"}).encode()
    async with serve() as client:
        response = await post_signed(client, (body, "application/json"))
    assert response.status_code == 200
    assert response.json() == {"challenge": "c-123"}


async def test_oauth_mode_serves_the_install_page(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """With SLACK_CLIENT_ID/SECRET set, /slack/install links to Slack's authorize URL with our scopes."""
    settings = make_settings(
        SLACK_BOT_TOKEN="",
        SLACK_CLIENT_ID="111.222",
        SLACK_CLIENT_SECRET="client-secret",
        TOKEN_ENCRYPTION_KEY=TokenCipher.new_key(),
    )
    app = create_app(
        settings,
        installation_store=FileInstallationStore(base_dir=str(tmp_path / "installations")),
        oauth_state_store=FileOAuthStateStore(expiration_seconds=600, base_dir=str(tmp_path / "states")),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        install = await client.get("/slack/install")
    assert install.status_code == 200
    assert "https://slack.com/oauth/v2/authorize?" in install.text
    assert "client_id=111.222" in install.text
    assert "scope=" + ",".join(OAUTH_SCOPES) in install.text
    assert "reactions:write" in OAUTH_SCOPES


@pytest.mark.parametrize(
    "field",
    [("text", "What is the payload size limit?"), ("channel_name", "api-payloads"), ("user_name", "payload-pat")],
    ids=["text", "channel_name", "user_name"],
)
async def test_slash_command_with_payload_in_a_field_is_queued(
    serve: Serve, fake_slack: FakeSlack, queue: Queue, field: tuple[str, str]
) -> None:
    """A /draft whose text, channel or user name holds "payload" is acked and queued (Bolt alone drops it)."""
    body, content_type = command_body(fake_slack)
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    fields[field[0]] = field[1]
    async with serve() as client:
        response = await post_signed(client, (urlencode(fields).encode(), content_type))
    assert response.status_code == 200
    assert response.json() == {"text": ACK_TEXT, "response_type": "ephemeral"}
    [job] = await waiting_jobs(queue)
    assert job.data["trigger_text"] == fields["text"]


async def test_form_body_whose_payload_field_is_not_json_gets_400(serve: Serve, queue: Queue) -> None:
    """A signed form whose `payload` field is not a JSON object is refused 400 with a reason, and queues nothing."""
    async with serve() as client:
        response = await post_signed(client, (b"payload=not-json", "application/x-www-form-urlencoded"))
    assert response.status_code == 400
    assert "payload" in response.text
    assert sum((await queue.counts()).values()) == 0


def top_level_mention(text: str) -> tuple[bytes, str]:
    """An app_mention posted in the channel itself, outside any thread."""
    body = json.loads(mention_body(text=text)[0])
    del body["event"]["thread_ts"]
    return json.dumps(body).encode(), "application/json"


async def test_bare_mention_in_a_thread_queues_a_reply_to_the_thread(serve: Serve, queue: Queue) -> None:
    """A bare @app in a thread is queued (a draft replying to the thread, no instruction), not dropped."""
    async with serve() as client:
        response = await post_signed(client, mention_body(text="<@U0FAKEBOT>"))
    assert response.status_code == 200
    [job] = await waiting_jobs(queue)
    assert (job.data["thread_ts"], job.data["message_ts"]) == (THREAD_TS, TS)
    assert "instruction" not in job.data
    assert job.data.get("trigger_text", "") == ""


async def test_mention_outside_a_thread_keeps_its_words_as_the_message(serve: Serve, queue: Queue) -> None:
    """Outside a thread a mention's words are the message to reply to, and a bare mention queues nothing."""
    async with serve() as client:
        worded = await post_signed(client, top_level_mention("<@U0FAKEBOT> Can we meet at 3?"))
        [job] = await waiting_jobs(queue)
        await queue.remove(job.id)
        bare = await post_signed(client, top_level_mention("<@U0FAKEBOT>"))
    assert (worded.status_code, bare.status_code) == (200, 200)
    assert job.data["trigger_text"] == "Can we meet at 3?"
    assert "instruction" not in job.data
    assert await waiting_jobs(queue) == []


BAD_RESPONSE_URLS = [
    "https://evil.example/hooks",
    "http://hooks.slack.com/commands/T0FAKE/1/abc",
    "https://hooks.slack.com.evil.example/commands/1",
    "https://user@hooks.slack.com/commands/1",
    "http://localhost.evil.example/response",
    "http://localhost@evil.example/response",
    "http://127.0.0.1.nip.io/response",
]


@pytest.mark.parametrize("url", BAD_RESPONSE_URLS)
@pytest.mark.parametrize("kind", ["command", "shortcut"])
async def test_response_url_off_slacks_hook_hosts_is_refused_at_the_edge(
    serve: Serve, fake_slack: FakeSlack, queue: Queue, url: str, kind: str
) -> None:
    """A request whose response_url is not https on Slack's hook hosts gets 400 with a reason and queues nothing."""
    if kind == "command":
        body, content_type = command_body(fake_slack)
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        fields["response_url"] = url
        request = (urlencode(fields).encode(), content_type)
    else:
        payload = json.loads(dict(parse_qsl(shortcut_body(fake_slack)[0].decode()))["payload"])
        request = (urlencode({"payload": json.dumps({**payload, "response_url": url})}).encode(), content_type_form())
    async with serve() as client:
        response = await post_signed(client, request)
    assert response.status_code == 400
    assert "response_url" in response.text
    assert sum((await queue.counts()).values()) == 0


def content_type_form() -> str:
    return "application/x-www-form-urlencoded"


async def test_loopback_response_url_is_refused_unless_slack_itself_is_loopback(
    serve: Serve, fake_slack: FakeSlack, queue: Queue
) -> None:
    """A loopback response_url is refused (never fetched) when SLACK_API_URL is Slack's; a hooks URL is queued."""
    hooks_url = "https://hooks.slack.com/commands/T0FAKE/1/abc"
    body, content_type = command_body(fake_slack)
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    async with serve(SLACK_API_URL="https://slack.com/api/", REDIS_URL=CLOSED_REDIS_URL) as client:
        loopback = await post_signed(client, shortcut_body(fake_slack))
    # No token: Bolt would otherwise ask the real slack.com who the token is before any listener runs.
    async with serve(SLACK_API_URL="https://slack.com/api/", SLACK_BOT_TOKEN="") as client:
        hooks = await post_signed(client, (urlencode({**fields, "response_url": hooks_url}).encode(), content_type))
    assert loopback.status_code == 400
    assert fake_slack.calls == [], "the refused URL was never fetched, not even for a 'try again' note"
    assert hooks.status_code == 200
    [job] = await waiting_jobs(queue)
    assert job.data["response_url"] == hooks_url


@pytest.fixture
async def silent_redis_url() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: a hung Redis, as a partition makes one."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_hung_redis_gets_try_again_and_5xx_within_slacks_deadline(
    serve: Serve, fake_slack: FakeSlack, silent_redis_url: str
) -> None:
    """With Redis accepting but never answering, a command hears "try again" and an event gets 503, each < 3 s."""
    async with serve(REDIS_URL=silent_redis_url) as client:
        answers: list[tuple[httpx.Response, float]] = []
        for body in (command_body(fake_slack), mention_body(), shortcut_body(fake_slack)):
            started = time.monotonic()
            # Bounded here too, so the old code (no deadline) fails in seconds instead of hanging the suite.
            async with asyncio.timeout(10):
                answers.append((await post_signed(client, body), time.monotonic() - started))
    (command, command_s), (event, event_s), (shortcut, shortcut_s) = answers
    print(f"\nhung redis: command answered in {command_s:.2f} s, event {event_s:.2f} s, shortcut {shortcut_s:.2f} s")
    assert shortcut.status_code == 200
    assert [post["text"] for post in fake_slack.response_posts["shortcut1"]] == [TRY_AGAIN_TEXT]
    assert shortcut_s < 2.8, "the enqueue deadline plus the note's own fit in Slack's 3 s"
    assert command.status_code == 200
    assert command.json()["text"] == TRY_AGAIN_TEXT
    assert event.status_code == 503
    # The deadline is ~1.5 s; Slack's own is 3 s. Generous under a loaded CI machine, still under Slack's.
    assert command_s < 2.8
    assert event_s < 2.8


async def test_shared_channel_event_is_queued_under_the_authorized_workspace(serve: Serve, queue: Queue) -> None:
    """A Slack Connect event whose outer team is the other org's is queued under the installation Bolt authorized."""
    body = json.loads(mention_body()[0])
    body["team_id"] = "T0OTHERORG"
    body["enterprise_id"] = "E0OTHERORG"
    body["authorizations"] = [{"team_id": TEAM, "enterprise_id": "E0OURORG", "is_enterprise_install": False}]
    async with serve() as client:
        response = await post_signed(client, (json.dumps(body).encode(), "application/json"))
    assert response.status_code == 200
    [job] = await waiting_jobs(queue)
    assert (job.data["workspace_id"], job.data["enterprise_id"], job.group) == (TEAM, "E0OURORG", TEAM)


async def test_teams_outside_slack_allowed_teams_are_refused_politely(
    serve: Serve, fake_slack: FakeSlack, queue: Queue
) -> None:
    """With SLACK_ALLOWED_TEAMS not naming the workspace: a plain refusal, no job; naming it: queued as usual."""
    challenge = json.dumps({"type": "url_verification", "challenge": "c-9", "token": "legacy"}).encode()
    async with serve(SLACK_ALLOWED_TEAMS="T0ELSEWHERE, E0SOMEORG") as client:
        command = await post_signed(client, command_body(fake_slack))
        shortcut = await post_signed(client, shortcut_body(fake_slack))
        event = await post_signed(client, mention_body())
        verification = await post_signed(client, (challenge, "application/json"))
    assert [r.status_code for r in (command, shortcut, event)] == [200, 200, 200]
    assert verification.json() == {"challenge": "c-9"}, "Slack's URL check still passes"
    assert command.json() == {"text": NOT_ALLOWED_TEXT, "response_type": "ephemeral"}
    assert [post["text"] for post in fake_slack.response_posts["shortcut1"]] == [NOT_ALLOWED_TEXT]
    assert sum((await queue.counts()).values()) == 0
    async with serve(SLACK_ALLOWED_TEAMS=f"T0ELSEWHERE,{TEAM}") as client:
        allowed = await post_signed(client, command_body(fake_slack))
    assert allowed.json()["text"] == ACK_TEXT
    assert len(await waiting_jobs(queue)) == 1


async def test_readyz_names_no_redis_host_to_the_public(serve: Serve) -> None:
    """/readyz on the public port says redis is unreachable without the error text (host and port) redis-py gives."""
    async with serve(REDIS_URL="redis://127.0.0.1:1/0") as client:
        with capture_logs() as logs:
            down = await client.get("/readyz")
    assert down.status_code == 503
    assert down.json()["reason"].startswith("redis: ")
    assert "127.0.0.1" not in down.text
    assert ":1" not in down.text
    assert any("127.0.0.1" in str(entry.get("error")) for entry in logs), "the detail goes to the log instead"


async def test_ignored_mentions_tell_their_author_why(serve: Serve, fake_slack: FakeSlack, queue: Queue) -> None:
    """A bare top-level mention gets usage help, a too-long one the limit, ephemerally; a Slack retry gets nothing."""
    async with serve(MAX_TRIGGER_TEXT_CHARS="100") as client:
        bare = await post_signed(client, top_level_mention("<@U0FAKEBOT>"))
        long = await post_signed(client, mention_body(text="<@U0FAKEBOT> " + "x" * 101))
        retried = await post_signed(client, top_level_mention("<@U0FAKEBOT>"), headers={"X-Slack-Retry-Num": "1"})
    assert [r.status_code for r in (bare, long, retried)] == [200, 200, 200]
    notes = fake_slack.calls_to("chat.postEphemeral")
    assert [call.params["text"] for call in notes] == [MENTION_USAGE_TEXT, too_long_text(100)]
    assert {(call.params["channel"], call.params["user"]) for call in notes} == {(CHANNEL, USER)}
    assert notes[1].params["thread_ts"] == THREAD_TS
    assert sum((await queue.counts()).values()) == 0
