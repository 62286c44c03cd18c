"""The whole pipeline: signed Slack request -> real web app -> Redis -> real worker -> fake Claude -> fake Slack."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slack_backend.config import Settings
from slack_backend.jobs.ledger import RedisDeliveryLedger
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.queue import Job, JobState, Queue, create_redis
from tests.fakes.anthropic_server import Behaviour, FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.support.engine import running, wait_until
from tests.support.oauth import CLIENT_ID, CLIENT_SECRET, OAUTH, install
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import (
    BOT_TOKEN,
    CHANNEL,
    EVENT_ID,
    GROUP_DM,
    TEAM,
    THREAD_TS,
    TS,
    USER,
    command_body,
    mention_body,
    post_signed,
    shortcut_body,
)


def draft_posts(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in posts if "blocks" in p]


def block_text(post: dict[str, Any]) -> str:
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in post.get("blocks", []) if "text" in b)


def posts_to(slack: FakeSlack, response_id: str) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(draft_posts(slack.response_posts.get(response_id, [])))

    return check


async def job_ended(queue: Queue, job_id: str) -> Job:
    async def ended() -> bool:
        job = await queue.get(job_id)
        return job is not None and job.state in (JobState.COMPLETED, JobState.FAILED)

    await wait_until(ended, timeout_s=15)
    job = await queue.get(job_id)
    assert job is not None
    return job


async def test_shortcut_gets_the_models_draft_without_replacing_the_message_it_was_used_on(
    pipeline: PipelineFactory,
) -> None:
    """A shortcut is acked within 3 s; its response_url gets one post, the draft, which replaces nothing."""
    async with pipeline() as p:
        started = time.monotonic()
        response = await post_signed(p.client, shortcut_body(p.slack, text="Can you send me the Q3 numbers?"))
        assert response.status_code == 200
        assert time.monotonic() - started < 3
        await wait_until(posts_to(p.slack, "shortcut1"))
        job = await job_ended(p.queue, response.headers.get("X-Job-Id") or await _only_job_id(p.queue))
    posts = p.slack.response_posts["shortcut1"]
    assert [post.get("blocks") is not None for post in posts] == [True], "no progress note is left behind"
    [draft] = posts
    assert "Draft: " in block_text(draft)
    assert "Q3 numbers" in block_text(draft)
    assert (draft["response_type"], draft["replace_original"]) == ("ephemeral", False)
    [request] = p.claude.message_requests
    assert "Q3 numbers" in str(request.body["messages"])
    assert job.state is JobState.COMPLETED
    assert job.result["delivered_via"] == "response_url"
    assert job.result["input_tokens"] > 0
    assert job.result["output_tokens"] > 0


async def test_shortcut_failure_note_replaces_nothing(pipeline: PipelineFactory) -> None:
    """A shortcut whose draft fails gets the plain failure note on its response_url, replacing nothing."""
    async with pipeline() as p:
        p.claude.script(Behaviour.bad_request())
        await post_signed(p.client, shortcut_body(p.slack))
        await job_ended(p.queue, await _only_job_id(p.queue))

        async def told() -> bool:
            return bool(p.slack.response_posts.get("shortcut1"))

        await wait_until(told)
    [note] = p.slack.response_posts["shortcut1"]
    assert "Sorry" in note["text"]
    assert (note["response_type"], note["replace_original"]) == ("ephemeral", False)


async def test_slash_command_draft_replaces_the_ack_with_no_progress_post_between(pipeline: PipelineFactory) -> None:
    """/draft: the ack says "Drafting"; its response_url gets one post, the draft, replacing that ack."""
    async with pipeline() as p:
        response = await post_signed(p.client, command_body(p.slack, text="Can you review my PR today?"))
        assert response.status_code == 200
        assert "Drafting" in response.json()["text"]
        job = await job_ended(p.queue, await _only_job_id(p.queue))
    assert job.state is JobState.COMPLETED
    [draft] = p.slack.response_posts["command1"]
    assert "review my PR" in block_text(draft)
    assert (draft["response_type"], draft["replace_original"]) == ("ephemeral", True)


async def test_mention_shows_a_reaction_while_drafting_and_leaves_no_note(pipeline: PipelineFactory) -> None:
    """A mention gets an hourglass reaction while it is drafted, removed after; no "Drafting" message stays."""
    async with pipeline() as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Lunch?", "ts": THREAD_TS}], mpim=True)
        await post_signed(p.client, mention_body(channel=GROUP_DM))
        job = await job_ended(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    [added] = p.slack.calls_to("reactions.add")
    [removed] = p.slack.calls_to("reactions.remove")
    assert added.params == removed.params == {"channel": GROUP_DM, "timestamp": TS, "name": "hourglass_flowing_sand"}
    assert p.slack.reactions == set()
    ephemerals = p.slack.calls_to("chat.postEphemeral")
    assert [bool(c.params.get("blocks")) for c in ephemerals] == [True], "only the draft, no progress note"
    assert p.slack.calls.index(added) < p.slack.calls.index(ephemerals[0]) < p.slack.calls.index(removed)


def _mention_event(event_id: str, ts: str) -> tuple[bytes, str]:
    body, content_type = mention_body(channel=GROUP_DM, ts=ts, event_ts=ts)
    event = json.loads(body)
    event["event_id"] = event_id
    return json.dumps(event).encode(), content_type


# The calls a worker makes to Slack's Web API for a mention in a group DM (the web app makes none of these).
_WORKER_METHODS = ("reactions.add", "conversations.replies", "chat.postEphemeral", "reactions.remove")


async def test_a_workers_slack_calls_share_its_connections(pipeline: PipelineFactory) -> None:
    """A worker's Slack Web API calls go through one session for its life: three mention drafts make ten calls
    (reactions added and removed, a thread read, ephemeral drafts), over one or two kept-alive connections, not one
    each (slack_sdk given no session opens one per call: in production, a TLS handshake per call)."""
    async with pipeline() as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Lunch?", "ts": THREAD_TS}], mpim=True)
        for n in range(3):
            await post_signed(p.client, _mention_event(f"Ev0000{n}", f"1700000100.00010{n}"))
            job = await job_ended(p.queue, f"Ev0000{n}")
            assert job.state is JobState.COMPLETED
    calls = [c for c in p.slack.calls if c.method in _WORKER_METHODS]
    # The thread is read once: the next drafts find it in the thread cache.
    assert {m: sum(c.method == m for c in calls) for m in _WORKER_METHODS} == {
        "reactions.add": 3,
        "conversations.replies": 1,
        "chat.postEphemeral": 3,
        "reactions.remove": 3,
    }
    assert None not in {c.peer for c in calls}
    assert len({c.peer for c in calls}) <= 2, f"{len(calls)} calls over {len({c.peer for c in calls})} connections"


async def test_the_hourglass_reaction_does_not_hold_up_the_draft(pipeline: PipelineFactory) -> None:
    """A mention's hourglass reaction goes to Slack beside the thread read and the model call: with Slack taking
    0.5 s to answer reactions.add, the model's request arrives before that answer. The reaction is taken away only
    after it was added, and none is left."""
    async with pipeline() as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Lunch?", "ts": THREAD_TS}], mpim=True)
        p.slack.slow_down("reactions.add", 0.5, 0.5)
        await post_signed(p.client, mention_body(channel=GROUP_DM))
        job = await job_ended(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    [added] = p.slack.calls_to("reactions.add")
    [removed] = p.slack.calls_to("reactions.remove")
    [request] = p.claude.message_requests
    assert request.received_s < added.received_s + 0.5, "the model call waited for Slack's answer to the reaction"
    assert removed.received_s >= added.received_s + 0.5, "removed before Slack had added it"
    assert p.slack.reactions == set()


async def test_a_failed_draft_leaves_no_hourglass_even_when_the_reaction_is_slow(pipeline: PipelineFactory) -> None:
    """The model refuses (400) while reactions.add is still on its way: the failure note takes the reaction away
    after it landed, so none is left on the user's message."""
    async with pipeline() as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Lunch?", "ts": THREAD_TS}], mpim=True)
        p.slack.slow_down("reactions.add", 0.5, 0.5)
        p.claude.script(Behaviour.bad_request())
        await post_signed(p.client, mention_body(channel=GROUP_DM))
        job = await job_ended(p.queue, EVENT_ID)

        async def taken_away() -> bool:
            return bool(p.slack.calls_to("reactions.remove"))

        await wait_until(taken_away)
    assert job.state is JobState.FAILED
    [added] = p.slack.calls_to("reactions.add")
    [removed] = p.slack.calls_to("reactions.remove")
    assert removed.received_s >= added.received_s + 0.5
    assert p.slack.reactions == set()


async def test_mention_in_a_thread_reads_the_thread_and_posts_ephemerally(pipeline: PipelineFactory) -> None:
    """An @mention in a channel thread: read with the user's own token; the draft goes ephemerally, by the bot."""
    async with pipeline(**OAUTH) as p:
        p.slack.enable_oauth(CLIENT_ID, CLIENT_SECRET)
        await install(p)
        p.slack.add_thread(
            CHANNEL,
            THREAD_TS,
            [
                {"user": "U0OTHER1", "text": "Launch moved to Friday, thoughts?", "ts": THREAD_TS},
                {"user": USER, "text": "<@U0FAKEBOT> how should I answer this?", "ts": TS},
            ],
        )
        response = await post_signed(p.client, mention_body())
        assert response.status_code == 200
        job = await job_ended(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    [request] = p.claude.message_requests
    assert "Launch moved to Friday" in str(request.body["messages"]), "thread context reached the model"
    drafts = [c for c in p.slack.calls_to("chat.postEphemeral") if c.params.get("blocks")]
    assert len(drafts) == 1
    params = drafts[0].params
    assert (params["channel"], params["user"], params["thread_ts"]) == (CHANNEL, USER, THREAD_TS)
    [read] = p.slack.calls_to("conversations.replies")
    assert read.token is not None
    assert read.token.startswith("xoxp-"), "a channel thread is read with the user's token (bots may not)"
    assert drafts[0].token is not None
    assert drafts[0].token.startswith("xoxb-")


async def test_mention_in_a_thread_drafts_a_reply_to_the_thread_following_the_words(
    pipeline: PipelineFactory,
) -> None:
    """@app <words> in a thread: the model gets the thread to answer and the words as instructions, not a message."""
    async with pipeline() as p:
        thread = [{"user": "U0OTHER1", "text": "Can you join at 9?", "ts": THREAD_TS}]
        p.slack.add_thread(GROUP_DM, THREAD_TS, thread, mpim=True)
        await post_signed(p.client, mention_body(text="<@U0FAKEBOT> decline politely", channel=GROUP_DM))
        job = await job_ended(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    [request] = p.claude.message_requests
    prompt = str(request.body["messages"])
    assert "<instructions>\\ndecline politely\\n</instructions>" in prompt
    assert "<message>" not in prompt, "the user's words are not the message to reply to"
    assert "Can you join at 9?" in prompt
    assert "Draft my reply to the thread message marked [reply to this]" in prompt


async def test_thread_mention_whose_thread_cannot_be_read_fails_plainly_without_a_model_call(
    pipeline: PipelineFactory,
) -> None:
    """A thread mention whose thread the bot cannot read fails at once, calls no model, and tells the user why."""
    async with pipeline() as p:
        await post_signed(p.client, mention_body(text="<@U0FAKEBOT>"))
        job = await job_ended(p.queue, EVENT_ID)

        async def told() -> bool:
            # Slack lets a bot token read no channel thread: the user is pointed at what works, not told to /invite.
            told = [str(c.params.get("text")) for c in p.slack.calls_to("chat.postEphemeral")]
            return any("only in DMs and group DMs" in text and "shortcut" in text for text in told)

        await wait_until(told)
    assert (job.state, job.attempts_made) == (JobState.FAILED, 1)
    assert p.claude.message_requests == []


async def test_bare_mention_in_a_thread_drafts_a_reply_to_the_thread(pipeline: PipelineFactory) -> None:
    """A bare @app in a thread gets a draft answering the thread, posted ephemerally in that thread."""
    async with pipeline() as p:
        thread = [{"user": "U0OTHER1", "text": "Lunch on Friday?", "ts": THREAD_TS}]
        p.slack.add_thread(GROUP_DM, THREAD_TS, thread, mpim=True)
        await post_signed(p.client, mention_body(text="<@U0FAKEBOT>", channel=GROUP_DM))
        job = await job_ended(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    [request] = p.claude.message_requests
    assert "Lunch on Friday?" in str(request.body["messages"])
    assert "<instructions>" not in str(request.body["messages"])
    drafts = [c for c in p.slack.calls_to("chat.postEphemeral") if c.params.get("blocks")]
    assert [d.params["thread_ts"] for d in drafts] == [THREAD_TS]


async def test_the_same_event_delivered_three_times_makes_one_draft(pipeline: PipelineFactory) -> None:
    """Slack's retries of one event (same event_id) make one job and one draft."""
    async with pipeline() as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}], mpim=True)
        for retry in (None, "1", "2"):
            headers = {"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"} if retry else None
            response = await post_signed(p.client, mention_body(channel=GROUP_DM), headers=headers)
            assert response.status_code == 200
        await job_ended(p.queue, EVENT_ID)
        assert sum((await p.queue.counts()).values()) == 1
    drafts = [c for c in p.slack.calls_to("chat.postEphemeral") if c.params.get("blocks")]
    assert len(drafts) == 1
    assert len(p.claude.message_requests) == 1


async def test_model_429_waits_retry_after_without_spending_an_attempt(pipeline: PipelineFactory) -> None:
    """The model answers 429 retry-after 2: the job waits ~2 s, its attempts stay unchanged, the draft arrives."""
    async with pipeline() as p:
        p.claude.script(Behaviour.rate_limited(retry_after_s=2))
        await post_signed(p.client, command_body(p.slack))
        await wait_until(lambda: _requests_reach(p.claude, 1), every_s=0.02)
        first_seen = time.monotonic()
        await wait_until(lambda: _requests_reach(p.claude, 2), every_s=0.02)
        gap_s = time.monotonic() - first_seen
        job_id = await _only_job_id(p.queue)
        job = await job_ended(p.queue, job_id)
    assert len(p.claude.message_requests) == 2, "one 429, then one answered call"
    assert job.state is JobState.COMPLETED
    assert job.attempts_made == 1, "the rate-limited run spent no attempt"
    assert len(draft_posts(p.slack.response_posts["command1"])) == 1
    # Retry-After 2 s, seen from the fake model's side; 0.2 s below it covers how late the first poll saw call one.
    assert gap_s >= 1.8, f"the retry came {gap_s:.2f} s after the 429"


async def test_model_overloaded_twice_then_delivered_after_backoff(pipeline: PipelineFactory) -> None:
    """529 twice then 200: the draft is delivered after two backoffs, on the third attempt."""
    async with pipeline() as p:
        p.claude.script(Behaviour.overloaded(), Behaviour.overloaded())
        await post_signed(p.client, command_body(p.slack))
        job = await job_ended(p.queue, await _only_job_id(p.queue))
    assert job.state is JobState.COMPLETED
    assert job.attempts_made == 3
    assert len(p.claude.message_requests) == 3
    assert len(draft_posts(p.slack.response_posts["command1"])) == 1


async def test_model_400_fails_at_once_and_the_user_is_told(pipeline: PipelineFactory) -> None:
    """A 400 from the model fails the job on its first attempt and tells the user in plain words."""
    async with pipeline() as p:
        p.claude.script(Behaviour.bad_request())
        await post_signed(p.client, command_body(p.slack))
        job = await job_ended(p.queue, await _only_job_id(p.queue))

        async def told() -> bool:
            return any("Sorry" in str(post.get("text")) for post in p.slack.response_posts.get("command1", []))

        await wait_until(told)
    assert job.state is JobState.FAILED
    assert job.attempts_made == 1
    assert len(p.claude.message_requests) == 1


async def test_slack_429_on_delivery_is_honoured_then_delivered(pipeline: PipelineFactory) -> None:
    """Slack answers 429 (Retry-After 1) to the draft post: the worker waits and delivers it once."""
    async with pipeline() as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}], mpim=True)
        # A mention's progress is a reaction, not a message: the 429 meets the draft itself.
        p.slack.rate_limit_next("chat.postEphemeral", retry_after_s=1, times=1)
        started = time.monotonic()
        await post_signed(p.client, mention_body(channel=GROUP_DM))
        job = await job_ended(p.queue, EVENT_ID)
        took_s = time.monotonic() - started
    assert job.state is JobState.COMPLETED
    calls = p.slack.calls_to("chat.postEphemeral")
    drafts = [c for c in calls if c.params.get("blocks")]
    # The draft took the 429, then went through once: a second delivery would make a third draft call.
    assert [bool(c.params.get("blocks")) for c in calls] == [True, True]
    assert len(drafts) == 2
    assert drafts[0].params == drafts[1].params, "the retry posts the same draft"
    assert took_s >= 1.0


async def test_a_rerun_after_posting_posts_nothing_new(
    pipeline: PipelineFactory, settings_for: Callable[..., Settings]
) -> None:
    """A worker that posted the draft but died before completing: the rerun after its lease expires posts nothing."""
    settings = settings_for()
    redis = create_redis(settings.redis_url_value())
    queue = ai_responses_queue(redis, settings)
    try:
        async with pipeline(with_worker=False) as p:
            await post_signed(p.client, command_body(p.slack))
            job_id = await _only_job_id(p.queue)
            async with contextlib.AsyncExitStack() as stack:
                doomed = await build_ai_worker(settings, redis, stack)
                reply = await queue.call("fetch", "doomed", 300, 1)
                job = Job.from_record(str(reply[3]), str(reply[4]))
                await doomed.processor(job)  # posts the draft, then "dies": never completes
            assert len(draft_posts(p.slack.response_posts["command1"])) == 1
            assert await RedisDeliveryLedger(redis, queue).delivered(job_id)
            async with contextlib.AsyncExitStack() as stack:
                rescuer = await build_ai_worker(settings, redis, stack)
                await stack.enter_async_context(running(rescuer))
                ended = await job_ended(p.queue, job_id)
        assert ended.state is JobState.COMPLETED
        assert ended.stalls == 1
        assert len(draft_posts(p.slack.response_posts["command1"])) == 1, "the rerun posted nothing new"
    finally:
        await redis.aclose()


async def _requests_reach(claude: FakeAnthropic, n: int) -> bool:
    return len(claude.message_requests) >= n


async def _only_job_id(queue: Queue) -> str:
    async def one() -> bool:
        return sum((await queue.counts()).values()) == 1

    await wait_until(one)
    for state in JobState:
        ids = await queue.job_ids(state)
        if ids:
            return ids[0]
    raise AssertionError("no job")


async def test_multi_workspace_token_comes_from_the_installation_store(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """OAuth mode, no SLACK_BOT_TOKEN: the workspace's bot token is read from the database store at use time."""
    from slack_sdk.oauth.installation_store import Installation

    from slack_backend.store import TokenCipher, create_engine, create_tables, installation_store

    key = TokenCipher.new_key()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await create_tables(engine)
        store = installation_store(engine, "1111.2222", TokenCipher([key]))
        await store.async_save(
            Installation(
                app_id="A0APP1",
                enterprise_id=None,
                team_id=TEAM,
                user_id=USER,
                bot_token=BOT_TOKEN,
                bot_id="B0BOT1",
                bot_user_id="U0FAKEBOT",
                bot_scopes=["commands", "chat:write", "app_mentions:read"],
            )
        )
        oauth = {
            "SLACK_BOT_TOKEN": "",
            "SLACK_CLIENT_ID": "1111.2222",
            "SLACK_CLIENT_SECRET": "oauth-secret-000",
            "TOKEN_ENCRYPTION_KEY": key,
        }
        async with pipeline(**oauth) as p:
            thread = [{"user": "U0OTHER1", "text": "hi", "ts": THREAD_TS}]
            p.slack.add_thread(GROUP_DM, THREAD_TS, thread, mpim=True)
            response = await post_signed(p.client, mention_body(channel=GROUP_DM))
            assert response.status_code == 200
            job = await job_ended(p.queue, EVENT_ID)
        assert job.state is JobState.COMPLETED
        drafts = [c for c in p.slack.calls_to("chat.postEphemeral") if c.params.get("blocks")]
        assert [c.token for c in drafts] == [BOT_TOKEN]
    finally:
        await engine.dispose()
