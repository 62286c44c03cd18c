"""Reading the conversation as Slack allows it today: the right token, Slack's per-workspace limits shared by all
processes (no 429 spent), a bounded wait after which the draft says it was written without the thread."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime

from slack_backend.jobs.context import PARTIAL_NOTE, SLOW_NOTE
from slack_backend.jobs.slack_limits import slack_call_limits
from slack_backend.queue import Job, JobState, Queue
from tests.fakes.slack_server import FakeSlack, SlackCall
from tests.support.engine import wait_until
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import (
    CHANNEL,
    EVENT_ID,
    GROUP_DM,
    THREAD_TS,
    USER,
    mention_body,
    post_signed,
    shortcut_body,
)


def drafts(slack: FakeSlack) -> list[SlackCall]:
    return [c for c in slack.calls_to("chat.postEphemeral") if c.params.get("blocks")]


def draft_text(call: SlackCall) -> str:
    return json.dumps(call.params["blocks"])


def mention(
    event_id: str, *, user: str = USER, channel: str = GROUP_DM, text: str = "<@U0FAKEBOT>"
) -> tuple[bytes, str]:
    body, content_type = mention_body(text=text, channel=channel, user=user)
    return body.replace(EVENT_ID.encode(), event_id.encode()), content_type


async def ended(queue: Queue, job_id: str, timeout_s: float = 10) -> Job:
    async def done() -> bool:
        job = await queue.get(job_id)
        return job is not None and job.state in (JobState.COMPLETED, JobState.FAILED)

    await wait_until(done, timeout_s=timeout_s)
    job = await queue.get(job_id)
    assert job is not None
    return job


async def test_a_429_on_the_thread_read_drafts_without_context_once(pipeline: PipelineFactory) -> None:
    """conversations.replies answers 429 every time: one read, no release loop, one model call, one draft saying so."""
    async with pipeline() as p:
        p.slack.add_thread(
            GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Launch moved?", "ts": THREAD_TS}], mpim=True
        )
        # Slack refuses every read this test makes (another deployment of the app spent the minute, say).
        p.slack.rate_limit_next("conversations.replies", retry_after_s=1, times=100)
        assert (await post_signed(p.client, mention_body(channel=GROUP_DM))).status_code == 200
        # Before the fix the job was released for every 429 (no attempt spent) and read the thread again, forever.
        job = await ended(p.queue, EVENT_ID, timeout_s=8)
        events = await p.queue.events(count=1000)
    assert job.state is JobState.COMPLETED
    assert len(p.slack.calls_to("conversations.replies")) == 1, "the Retry-After is honoured: no second 429 spent"
    assert not [e for e in events if e.get("event") == "released"]
    assert len(p.claude.message_requests) == 1
    [draft] = drafts(p.slack)
    assert (draft.params["channel"], draft.params["user"], draft.params["thread_ts"]) == (GROUP_DM, USER, THREAD_TS)
    assert "Drafted without the thread" in draft_text(draft)


async def test_thread_pages_ask_for_at_most_15_unless_marketplace(pipeline: PipelineFactory) -> None:
    """Outside the Marketplace one read of <= 15 messages a minute (the draft says it saw the start only);
    SLACK_MARKETPLACE_APP=true pages of 200 up to the newest message."""
    thread = [{"user": f"U0P{i:03d}", "text": f"message {i}", "ts": f"1699999999.{i:06d}"} for i in range(200, 240)]
    for marketplace, expected in (("false", 15), ("true", 200)):
        async with pipeline(SLACK_MARKETPLACE_APP=marketplace) as p:
            p.slack.marketplace_app = marketplace == "true"
            p.slack.calls.clear()
            p.slack.add_thread(GROUP_DM, THREAD_TS, thread, mpim=True)
            assert (await post_signed(p.client, mention(f"Ev0PAGE{marketplace}"))).status_code == 200
            await ended(p.queue, f"Ev0PAGE{marketplace}")
            reads = p.slack.calls_to("conversations.replies")
        assert {int(c.params["limit"]) for c in reads} == {expected}
        prompt = str(p.claude.message_requests[-1].body["messages"])
        [draft] = drafts(p.slack)
        if marketplace == "true":
            assert "message 239" in prompt, "the newest message was read"
            assert "Drafted" not in draft_text(draft)
        else:
            assert len(reads) == 1, "a second page would wait a minute: not within the bound"
            assert "message 200" in prompt
            assert "message 215" not in prompt
            assert PARTIAL_NOTE.strip("_") in draft_text(draft)
        assert p.slack.reads.refused_429_at == []


async def test_fifty_drafts_of_one_thread_share_the_workspaces_reads_and_spend_no_429(
    pipeline: PipelineFactory,
) -> None:
    """50 drafts needing one thread: Slack sees at most its read limit (a minute scaled to 2 s), no 429, and no draft
    waits past SLACK_CONTEXT_WAIT_S (1 s) for it; those left without the thread say so."""
    window_s, wait_s, n = 2.0, 1.0, 50
    async with pipeline(
        SLACK_CONTEXT_WAIT_S=str(wait_s),
        slack_limits=slack_call_limits(marketplace_app=False, minute_ms=int(window_s * 1000)),
    ) as p:
        p.slack.limit_thread_reads(1, window_s)
        p.slack.add_thread(
            GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Who owns the launch?", "ts": THREAD_TS}], mpim=True
        )
        ids = [f"Ev0MANY{i:03d}" for i in range(n)]
        replies = await asyncio.gather(
            *(post_signed(p.client, mention(e, user=f"U0MANY{i:03d}")) for i, e in enumerate(ids))
        )
        assert [r.status_code for r in replies] == [200] * n
        jobs = [await ended(p.queue, job_id, timeout_s=60) for job_id in ids]
    reads = p.slack.reads.served_at
    assert p.slack.reads.refused_429_at == [], "no read was refused: the limiter spent no 429"
    assert all(later - earlier >= window_s * 0.95 for earlier, later in itertools.pairwise(reads))
    assert [j.state for j in jobs] == [JobState.COMPLETED] * n
    assert len(drafts(p.slack)) == n
    with_thread = [d for d in drafts(p.slack) if "Drafted without the thread" not in draft_text(d)]
    # A read that answered after its job's bound is counted by Slack but left out of that draft.
    assert 1 <= len(with_thread) <= len(reads)
    # Each job's whole run (thread, model, delivery) stays within the wait bound plus 1.5 s of work on a loaded
    # 2-core host; waiting for the next read (2 s away) would exceed it.
    run_ms = [j.finished_ms - j.processed_ms for j in jobs if j.finished_ms and j.processed_ms]
    assert len(run_ms) == n
    assert max(run_ms) < (wait_s + 1.5) * 1000, run_ms


async def test_a_thread_slower_than_the_wait_bound_is_left_out(pipeline: PipelineFactory) -> None:
    """Slack takes 3 s to answer the thread read, the bound is 0.5 s: the draft goes out without it, saying so."""
    async with pipeline(SLACK_CONTEXT_WAIT_S="0.5") as p:
        p.slack.add_thread(GROUP_DM, THREAD_TS, [{"user": "U0OTHER1", "text": "Ready?", "ts": THREAD_TS}], mpim=True)
        p.slack.slow_down("conversations.replies", 3.0, 3.0)
        await post_signed(p.client, mention_body(channel=GROUP_DM, text="<@U0FAKEBOT> say yes"))
        job = await ended(p.queue, EVENT_ID)
    assert job.state is JobState.COMPLETED
    assert job.finished_ms is not None
    assert job.processed_ms is not None
    assert job.finished_ms - job.processed_ms < 2500, "the draft did not wait for the 3 s read"
    [draft] = drafts(p.slack)
    assert SLOW_NOTE.strip("_") in draft_text(draft)
    assert "Ready?" not in str(p.claude.message_requests[0].body["messages"])


async def test_the_bot_token_never_asks_for_a_channel_thread(pipeline: PipelineFactory) -> None:
    """Single-workspace mode, a shortcut on a channel thread's message: no read Slack would refuse is made; the draft
    answers the message itself."""
    async with pipeline() as p:
        p.slack.add_thread(CHANNEL, THREAD_TS, [{"user": "U0OTHER1", "text": "Earlier", "ts": THREAD_TS}])
        response = await post_signed(p.client, shortcut_body(p.slack))
        assert response.status_code == 200

        async def drafted() -> bool:
            return any("blocks" in post for post in p.slack.response_posts.get("shortcut1", []))

        await wait_until(drafted)
    assert p.slack.calls_to("conversations.replies") == []
    prompt = str(p.claude.message_requests[0].body["messages"])
    assert "Q3 numbers" in prompt


async def test_the_model_is_told_who_wrote_what_whom_it_answers_and_todays_date(pipeline: PipelineFactory) -> None:
    """Names from users.info (cached: each person asked once over two drafts), the message replied to marked, and
    today's date in the requester's time zone (Tokyo: already Wednesday at 23:30 UTC on Tuesday)."""
    clock = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    async with pipeline(SLACK_MARKETPLACE_APP="true", clock=lambda: clock) as p:
        p.slack.marketplace_app = True
        p.slack.add_person(USER, "me", display_name="Kenji Sato", tz="Asia/Tokyo")
        p.slack.add_person("U0OTHER1", "ana", display_name="Ana Lima", tz="Europe/Lisbon")
        thread = [
            {"user": "U0OTHER1", "text": "Can we move the launch?", "ts": THREAD_TS},
            {"user": USER, "text": "Let me check", "ts": "1699999999.000300"},
            {"user": "U0GONE01", "text": "Friday works for me", "ts": "1699999999.000400"},
            {"user": USER, "text": "<@U0FAKEBOT>", "ts": "1700000000.000100"},
        ]
        p.slack.add_thread(GROUP_DM, THREAD_TS, thread, mpim=True)
        for event_id in ("Ev0NAMES1", "Ev0NAMES2"):
            assert (await post_signed(p.client, mention(event_id))).status_code == 200
            assert (await ended(p.queue, event_id)).state is JobState.COMPLETED
    prompt = p.claude.message_requests[0].body["messages"][0]["content"]
    # 1699999999 is Tue 14 Nov 2023 22:13 UTC: in Tokyo, Wednesday morning.
    assert "Ana Lima (<@U0OTHER1>), Wed 15 Nov 07:13: Can we move the launch?" in prompt, "names, local times"
    assert "<@U0GONE01>, " in prompt, "someone users.info does not know is shown by id"
    assert "<@U0GONE01>, Wed 15 Nov 07:13 [reply to this]: Friday works for me" in prompt
    assert prompt.count("] [reply to this]") + prompt.count(":13 [reply to this]") == 1, "one message is marked"
    assert "I am Kenji Sato (<@U0USER1>). Today is Wednesday, 02 December 2026" in prompt
    assert "time zone Asia/Tokyo" in prompt
    asked = [c.params["user"] for c in p.slack.calls_to("users.info")]
    assert sorted(asked) == sorted({USER, "U0OTHER1", "U0GONE01"}), "each person asked once; the cache did the rest"
    assert p.claude.message_requests[1].body["messages"][0]["content"] == prompt
