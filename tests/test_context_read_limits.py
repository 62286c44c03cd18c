"""Reading the thread under Slack's rate limits: a 429 ends the context read, it never loops the job."""

from __future__ import annotations

from slack_backend.queue import JobState
from tests.support.engine import wait_until
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import CHANNEL, EVENT_ID, THREAD_TS, USER, mention_body, post_signed


async def test_a_429_on_the_thread_read_drafts_without_context_once(pipeline: PipelineFactory) -> None:
    """conversations.replies answers 429 every time: one read, no release loop, one model call, one draft."""
    async with pipeline() as p:
        p.slack.add_thread(CHANNEL, THREAD_TS, [{"user": "U0OTHER1", "text": "Launch moved?", "ts": THREAD_TS}])
        # Slack limits thread reads of a non-Marketplace app to 1 a minute: every read this test makes is refused.
        p.slack.rate_limit_next("conversations.replies", retry_after_s=1, times=100)
        response = await post_signed(p.client, mention_body())
        assert response.status_code == 200

        async def ended() -> bool:
            job = await p.queue.get(EVENT_ID)
            return job is not None and job.state in (JobState.COMPLETED, JobState.FAILED)

        # Before the fix the job was released for every 429 (no attempt spent) and read the thread again, forever.
        await wait_until(ended, timeout_s=8)
        job = await p.queue.get(EVENT_ID)
        events = await p.queue.events(count=1000)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert len(p.slack.calls_to("conversations.replies")) == 1
    assert not [e for e in events if e.get("event") == "released"]
    assert len(p.claude.message_requests) == 1
    drafts = [c for c in p.slack.calls_to("chat.postEphemeral") if c.params.get("blocks")]
    assert len(drafts) == 1
    assert (drafts[0].params["channel"], drafts[0].params["user"], drafts[0].params["thread_ts"]) == (
        CHANNEL,
        USER,
        THREAD_TS,
    )


async def test_thread_pages_ask_for_at_most_15_unless_marketplace(pipeline: PipelineFactory) -> None:
    """A non-Marketplace app asks conversations.replies for <= 15 messages a call; SLACK_MARKETPLACE_APP=true, 200."""
    thread = [{"user": f"U0P{i:03d}", "text": f"message {i}", "ts": f"1699999999.{i:06d}"} for i in range(200, 240)]
    for marketplace, expected in (("false", 15), ("true", 200)):
        async with pipeline(SLACK_MARKETPLACE_APP=marketplace) as p:
            p.slack.marketplace_app = marketplace == "true"
            p.slack.calls.clear()
            p.slack.add_thread(CHANNEL, THREAD_TS, thread)
            body, content_type = mention_body()
            body = body.replace(EVENT_ID.encode(), f"Ev0PAGE{marketplace}".encode())
            assert (await post_signed(p.client, (body, content_type))).status_code == 200

            async def drafted() -> bool:
                return any(c.params.get("blocks") for c in p.slack.calls_to("chat.postEphemeral"))

            await wait_until(drafted, timeout_s=10)
            limits = {int(c.params["limit"]) for c in p.slack.calls_to("conversations.replies")}
        assert limits == {expected}
        assert "message 239" in str(p.claude.message_requests[-1].body["messages"]), "the newest message was read"
