"""Watched conversations through the real Bolt app, engine and fakes: `/draft watch`, passive suggestions at a lower
priority than direct requests, and the caps (own and bot messages, quiet hours, one open per thread, unwatch)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from structlog.testing import capture_logs

from slack_backend.config import Settings
from slack_backend.jobs.queues import DIRECT_PRIORITY, PASSIVE_PRIORITY
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.queue import Job, JobState, create_redis
from slack_backend.slack import card
from slack_backend.slack import home_view as hv
from slack_backend.store.preferences import Preferences
from slack_backend.web.watch import DATABASE_DOWN_TEXT
from tests.fakes.anthropic_server import Behaviour
from tests.fakes.slack_server import FakeSlack
from tests.support.app import Serve
from tests.support.card_requests import click as card_click
from tests.support.engine import running, wait_until
from tests.support.home_requests import OTHER, button_action, message_body, select_action
from tests.support.oauth import OAUTH, install
from tests.support.pipeline import Pipeline, PipelineFactory
from tests.support.slack_requests import CHANNEL, CLOSED_REDIS_URL, USER, command_body, post_signed
from tests.test_app_home import STYLE_MARKER, click
from tests.test_card import button_values, shown
from tests.test_work_once import ephemerals, finished

THREAD = "1700000300.000100"
DM = "D0DIRECT1"


async def slash(p: Pipeline, text: str, *, channel: str = CHANNEL, trigger_id: str = "trig.watch") -> str:
    """Run the slash command in `channel` and return the ephemeral answer."""
    return await slash_to(p.client, p.slack, text, channel=channel, trigger_id=trigger_id)


async def slash_to(
    client: httpx.AsyncClient, slack: FakeSlack, text: str, *, channel: str = CHANNEL, trigger_id: str = "trig.watch"
) -> str:
    body, content_type = command_body(slack, text=text, trigger_id=trigger_id)
    body = body.replace(f"channel_id={CHANNEL}".encode(), f"channel_id={channel}".encode())
    response = await post_signed(client, (body, content_type))
    assert response.status_code == 200, response.text
    return str(response.json()["text"])


async def message(p: Pipeline, text: str, event_id: str, ts: str, **fields: Any) -> None:
    response = await post_signed(p.client, message_body(text, event_id=event_id, ts=ts, **fields))
    assert response.status_code == 200, response.text


async def passive_job(p: Pipeline, event_id: str, user: str = USER) -> Job | None:
    return await p.queue.get(f"{event_id}:{user}")


async def total_jobs(p: Pipeline) -> int:
    return sum((await p.queue.counts()).values())


async def test_a_mention_in_a_watched_channel_is_suggested_after_a_direct_request_queued_with_it(
    pipeline: PipelineFactory, settings_for: Callable[..., Settings]
) -> None:
    """Watch -> someone's mention queues one passive job (priority PASSIVE); a direct request queued after it still
    reaches the fake model first; the suggestion arrives ephemerally to the watcher in that channel."""
    async with pipeline(with_worker=False) as p:
        assert "Watching this conversation" in await slash(p, "watch")
        await message(p, f"<@{USER}> can you review PASSIVE-ASK today?", "EvW1", "1700000200.000100")
        await post_signed(p.client, command_body(p.slack, text="DIRECT-ASK by Friday?", trigger_id="trig.direct"))
        passive = await passive_job(p, "EvW1")
        direct = await p.queue.get("trig.direct")
        assert passive is not None
        assert direct is not None
        assert (passive.priority, direct.priority) == (PASSIVE_PRIORITY, DIRECT_PRIORITY)
        assert passive.data["trigger"] == "watched_mention"
        assert passive.data["user_id"] == USER
        settings = settings_for(WORKER_CONCURRENCY="1")
        redis = create_redis(settings.redis_url_value())
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(redis.aclose)
            await stack.enter_async_context(running(await build_ai_worker(settings, redis, stack)))
            assert (await finished(p.queue, passive.id)).state is JobState.COMPLETED
            assert (await finished(p.queue, "trig.direct")).state is JobState.COMPLETED
        assert await total_jobs(p) == 2
    first, second = (str(r.body["messages"]) for r in p.claude.message_requests)
    assert "DIRECT-ASK" in first, "the direct request went first"
    assert "PASSIVE-ASK" in second
    drafts, _ = ephemerals(p.slack)
    [suggestion] = [d for d in drafts if "PASSIVE-ASK" in json.dumps(d.params.get("blocks"))]
    assert (suggestion.params["channel"], suggestion.params["user"]) == (CHANNEL, USER)
    assert "thread_ts" not in suggestion.params
    assert p.slack.calls_to("reactions.add") == [], "nothing shows on the other person's message"


async def test_own_bot_edited_and_unwatched_messages_and_quiet_hours_yield_nothing(pipeline: PipelineFactory) -> None:
    """No passive job for the user's own message, a bot's, an edit, a channel they do not watch, or in quiet hours."""
    async with pipeline(with_worker=False) as p:
        await slash(p, "watch")
        mention = f"<@{USER}> ping"
        await message(p, mention, "EvOwn", "1700000201.000100", user=USER)
        await message(p, mention, "EvBot", "1700000202.000100", bot_id="B0OTHER", subtype="bot_message")
        await message(p, mention, "EvEdit", "1700000203.000100", subtype="message_changed")
        await message(p, mention, "EvElse", "1700000204.000100", channel="C0NOTWATCH")
        hour = datetime.now(UTC).hour
        # A window around now, generous on both sides so a test crossing the hour still falls inside it.
        await click(p, select_action(hv.QUIET_START_ACTION, str((hour - 1) % 24)))
        await click(p, select_action(hv.QUIET_END_ACTION, str((hour + 2) % 24)))
        await message(p, mention, "EvQuiet", "1700000205.000100")
        assert await total_jobs(p) == 0
        await click(p, select_action(hv.QUIET_START_ACTION, hv.UNSET))
        await message(p, mention, "EvAwake", "1700000206.000100")
        assert await passive_job(p, "EvAwake") is not None, "the same mention outside quiet hours is suggested"
        assert await total_jobs(p) == 1


async def test_one_open_suggestion_per_thread_until_the_user_answers_there(pipeline: PipelineFactory) -> None:
    """A second mention in a thread with an open suggestion queues none; once the user writes there the thread is
    theirs and the next reply by someone else is suggested (watched_thread); a reply in their own thread is too."""
    async with pipeline(with_worker=False) as p:
        await slash(p, "watch")
        await message(p, f"<@{USER}> thoughts?", "EvT1", "1700000301.000100", thread_ts=THREAD, parent_user_id=OTHER)
        await message(p, f"<@{USER}> again?", "EvT2", "1700000302.000100", thread_ts=THREAD, parent_user_id=OTHER)
        await message(p, "replying myself", "EvT3", "1700000303.000100", user=USER, thread_ts=THREAD)
        await message(p, "ok, and you?", "EvT4", "1700000304.000100", thread_ts=THREAD, parent_user_id=OTHER)
        await message(p, "nice idea", "EvT5", "1700000401.000200", thread_ts="1700000401.000100", parent_user_id=USER)
        await message(p, "unrelated thread", "EvT6", "1700000501.000200", thread_ts="1700000501.000100")
        first, repeat, later = [await passive_job(p, e) for e in ("EvT1", "EvT2", "EvT4")]
        own_thread, unrelated = await passive_job(p, "EvT5"), await passive_job(p, "EvT6")
        assert first is not None
        assert first.data["trigger"] == "watched_mention"
        assert first.data["thread_ts"] == THREAD
        assert repeat is None, "one open suggestion per thread"
        assert later is not None
        assert later.data["trigger"] == "watched_thread"
        assert own_thread is not None
        assert own_thread.data["trigger"] == "watched_thread"
        assert unrelated is None, "a thread the user is not in"
        assert await total_jobs(p) == 3


async def test_unwatch_by_command_or_from_home_stops_suggestions(pipeline: PipelineFactory) -> None:
    """After `/draft unwatch`, or the Home tab's Unwatch button, a mention queues nothing and Home lists no watch."""
    async with pipeline(with_worker=False) as p:
        await slash(p, "watch")
        assert "already watch" in await slash(p, "watch")
        assert "Stopped watching" in await slash(p, "unwatch")
        await message(p, f"<@{USER}> hello", "EvU1", "1700000601.000100")
        await slash(p, "watch")
        await click(p, button_action(f"{hv.UNWATCH_ACTION}:{CHANNEL}", CHANNEL))
        await message(p, f"<@{USER}> hello again", "EvU2", "1700000602.000100")
        assert await total_jobs(p) == 0
        assert "don't watch" in await slash(p, "unwatch")
        assert "/draft watch" in await slash(p, " "), "the usage help tells of watching"
    view = json.dumps(p.slack.home.latest_view(USER))
    assert "You watch no conversations" in view
    assert f"<#{CHANNEL}>" not in view


async def test_a_dm_in_a_watched_dm_is_suggested_once_while_open(pipeline: PipelineFactory) -> None:
    """A DM the user watches: the other person's message queues a watched_dm job; the next one while it is open
    does not; a redelivery of the first event adds nothing."""
    async with pipeline(with_worker=False) as p:
        await slash(p, "watch", channel=DM)
        fields = {"channel": DM, "channel_type": "im"}
        await message(p, "are you free?", "EvD1", "1700000701.000100", **fields)
        await message(p, "hello??", "EvD2", "1700000702.000100", **fields)
        retry = message_body("are you free?", event_id="EvD1", ts="1700000701.000100", **fields)
        response = await post_signed(p.client, retry, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "x"})
        assert response.status_code == 200
        dm = await passive_job(p, "EvD1")
        assert dm is not None
        assert dm.data["trigger"] == "watched_dm"
        assert dm.data["channel_id"] == DM
        assert await passive_job(p, "EvD2") is None
        assert await total_jobs(p) == 1


async def test_no_message_text_in_logs_metrics_or_redis_from_style_examples(pipeline: PipelineFactory) -> None:
    """A passive suggestion with consented style examples runs end to end: the message's and the style example's
    marker strings never appear in a log line or /metrics, and the style example never reaches Redis."""
    message_marker = "zq-message-marker-4417"
    with capture_logs() as logs:
        async with pipeline(**OAUTH) as p:
            p.slack.enable_oauth(OAUTH["SLACK_CLIENT_ID"], OAUTH["SLACK_CLIENT_SECRET"])
            await install(p)
            p.slack.home.add_history(
                CHANNEL, [{"user": USER, "text": f"hi {STYLE_MARKER}", "ts": "1700000090.000001"}], members=[USER]
            )
            await click(p, {"type": "checkboxes", "action_id": hv.LEARN_ACTION, "selected_options": [{"value": "on"}]})
            await slash(p, "watch")
            await message(p, f"<@{USER}> {message_marker}?", "EvM1", "1700000801.000100")
            job = await finished(p.queue, f"EvM1:{USER}")
            assert job.state is JobState.COMPLETED, job.failed_reason
            metrics = (await p.client.get("/metrics")).text
            redis_dump = await dump_redis(p)
    assert STYLE_MARKER in str(p.claude.message_requests[-1].body["messages"]), "the example did reach the model"
    logged = repr(logs)
    assert any(entry.get("event") == "passive suggestion queued" for entry in logs), "the logs were captured"
    assert message_marker not in logged
    assert STYLE_MARKER not in logged
    assert message_marker not in metrics
    assert STYLE_MARKER not in metrics
    assert STYLE_MARKER not in redis_dump


async def dump_redis(p: Pipeline) -> str:
    """Every value under this test's queue prefix, as text."""
    redis = p.queue.redis
    parts: list[str] = []
    async for key in redis.scan_iter(match=f"*{p.queue.keys.prefix}*"):
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            parts.append(str(await redis.hgetall(key)))
        elif kind == "string":
            parts.append(str(await redis.get(key)))
        elif kind == "zset":
            parts.append(str(await redis.zrange(key, 0, -1)))
        elif kind == "list":
            parts.append(str(await redis.lrange(key, 0, -1)))
        elif kind == "stream":
            parts.append(str(await redis.xrange(key)))
        elif kind == "set":
            parts.append(str(await redis.smembers(key)))
    assert parts, "the scan found this test's keys"
    return "\n".join(parts)


async def test_a_queued_suggestion_is_dropped_without_a_model_call_once_unwatched_or_quiet(
    pipeline: PipelineFactory, settings_for: Callable[..., Settings]
) -> None:
    """Passive jobs wait behind direct ones: one whose user unwatched, or entered quiet hours, before it started
    ends with no model call and no post, and frees its thread for the next suggestion."""
    async with pipeline(with_worker=False) as p:
        await slash(p, "watch")
        await slash(p, "watch", channel="C0SECOND1")
        await message(p, f"<@{USER}> first?", "EvQ1", "1700000901.000100")
        await message(p, f"<@{USER}> second?", "EvQ2", "1700000902.000100", channel="C0SECOND1")
        await slash(p, "unwatch")
        hour = datetime.now(UTC).hour
        await click(p, select_action(hv.QUIET_START_ACTION, str((hour - 1) % 24)))
        await click(p, select_action(hv.QUIET_END_ACTION, str((hour + 2) % 24)))
        settings = settings_for()
        redis = create_redis(settings.redis_url_value())
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(redis.aclose)
            await stack.enter_async_context(running(await build_ai_worker(settings, redis, stack)))
            unwatched = await finished(p.queue, f"EvQ1:{USER}")
            quiet = await finished(p.queue, f"EvQ2:{USER}")
        for job in (unwatched, quiet):
            assert job.state is JobState.COMPLETED
            assert job.result["delivered_via"] == "none"
        await click(p, select_action(hv.QUIET_START_ACTION, hv.UNSET))
        await message(
            p, f"<@{USER}> again?", "EvQ3", "1700000903.000100", channel="C0SECOND1", thread_ts="1700000902.000100"
        )
        assert await passive_job(p, "EvQ3") is not None, "the dropped suggestion freed its thread"
    assert p.claude.message_requests == []
    assert ephemerals(p.slack)[0] == []


async def test_redis_down_answers_503_and_frees_the_thread_for_slacks_redelivery(
    serve: Serve, pipeline: PipelineFactory, slack: FakeSlack
) -> None:
    """With Redis unreachable a watched mention gets 503 (Slack delivers it again) and holds no open suggestion, so
    the redelivery, once Redis is back, queues it."""
    async with serve(REDIS_URL=CLOSED_REDIS_URL) as client:
        assert "Watching" in await slash_to(client, slack, "watch")
        down = await post_signed(client, message_body(f"<@{USER}> hi", event_id="EvR1", ts="1700001001.000100"))
    assert down.status_code == 503
    async with pipeline(with_worker=False) as p:
        retry = message_body(f"<@{USER}> hi", event_id="EvR1", ts="1700001001.000100")
        again = await post_signed(
            p.client, retry, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"}
        )
        assert again.status_code == 200
        assert await passive_job(p, "EvR1") is not None


def test_quiet_hours_are_read_on_the_users_clock_and_may_span_midnight() -> None:
    """22-7 in Amsterdam is quiet at 23:30 and 06:59 there, not at 07:00 or 21:59; equal or unset hours never are."""
    night = Preferences(quiet_start_hour=22, quiet_end_hour=7, time_zone="Europe/Amsterdam")
    # 1 December: Amsterdam is UTC+1.
    assert night.in_quiet_hours(datetime(2026, 12, 1, 22, 30, tzinfo=UTC))
    assert night.in_quiet_hours(datetime(2026, 12, 1, 5, 59, tzinfo=UTC))
    assert not night.in_quiet_hours(datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    assert not night.in_quiet_hours(datetime(2026, 12, 1, 20, 59, tzinfo=UTC))
    day = Preferences(quiet_start_hour=9, quiet_end_hour=17)
    assert day.in_quiet_hours(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert not day.in_quiet_hours(datetime(2026, 12, 1, 17, 0, tzinfo=UTC))
    assert not Preferences(quiet_start_hour=5, quiet_end_hour=5).in_quiet_hours(datetime(2026, 12, 1, 5, tzinfo=UTC))
    assert not Preferences().in_quiet_hours(datetime(2026, 12, 1, 5, tzinfo=UTC))


async def test_database_down_acks_message_events_and_tells_the_watch_command_to_retry(
    serve: Serve, slack: FakeSlack
) -> None:
    """With the database away the app still starts; message events get 200 (no Slack retry storm) and
    `/draft watch` answers "try again" in plain words."""
    closed = "postgresql+asyncpg://nobody:nothing@127.0.0.1:1/none"
    async with serve(DATABASE_URL=closed) as client:
        event = await post_signed(client, message_body(f"<@{USER}> hi", event_id="EvDB1", ts="1700001101.000100"))
        answer = await slash_to(client, slack, "watch")
    assert event.status_code == 200
    assert answer == DATABASE_DOWN_TEXT


async def test_a_failed_or_over_quota_passive_suggestion_tells_nothing_and_frees_its_thread(
    pipeline: PipelineFactory,
) -> None:
    """Nobody asked for a passive suggestion: when the model refuses it for good, or the workspace is over its
    quota, no failure or quota note is posted, and the thread takes the next suggestion."""
    async with pipeline(WORKSPACE_DAILY_TOKEN_QUOTA="1") as p:
        await slash(p, "watch")
        p.claude.script(Behaviour.bad_request())
        await message(p, f"<@{USER}> one?", "EvF1", "1700001201.000100", thread_ts=THREAD, parent_user_id=OTHER)
        failed = await finished(p.queue, f"EvF1:{USER}")
        await post_signed(p.client, command_body(p.slack, text="use the quota up", trigger_id="trig.quota"))
        await finished(p.queue, "trig.quota")
        await message(p, f"<@{USER}> two?", "EvF2", "1700001202.000100", thread_ts=THREAD, parent_user_id=OTHER)
        over = await finished(p.queue, f"EvF2:{USER}")
    assert failed.state is JobState.FAILED
    assert over.state is JobState.COMPLETED
    assert over.result["delivered_via"] == "none"
    assert [c.params["channel"] for c in p.slack.calls_to("chat.postEphemeral")] == [], "no note reached the user"
    assert len(p.claude.message_requests) == 2, "the failed suggestion and the direct draft; none over quota"


async def test_watch_then_a_passive_card_sent_as_me_posts_once_and_frees_the_thread(pipeline: PipelineFactory) -> None:
    """The passive flow as a user meets it: watch -> someone mentions them -> a suggestion card arrives on its own
    (ephemeral, with the card's buttons) -> Send as me posts it once with their own token -> the thread is free for
    the next suggestion."""
    async with pipeline(**OAUTH) as p:
        p.slack.enable_oauth(OAUTH["SLACK_CLIENT_ID"], OAUTH["SLACK_CLIENT_SECRET"])
        await install(p)
        await slash(p, "watch")
        await message(p, f"<@{USER}> can you send PASSIVE-SEND numbers?", "EvS1", "1700000901.000100")
        job = await finished(p.queue, f"EvS1:{USER}")
        assert job.state is JobState.COMPLETED, job.failed_reason
        drafts, _ = ephemerals(p.slack)
        [suggestion] = [d for d in drafts if "PASSIVE-SEND" in json.dumps(d.params.get("blocks"))]
        blocks = suggestion.params["blocks"]
        [post_blocks] = [json.loads(blocks) if isinstance(blocks, str) else blocks]
        suggestion_id = button_values(post_blocks)
        send = card_click(p.slack, card.SEND, suggestion_id)
        assert (await post_signed(p.client, send.body)).status_code == 200

        async def sent() -> bool:
            return "Sent as you" in shown(p.slack, send.response_id)

        await wait_until(sent, timeout_s=15)
        await message(p, f"<@{USER}> and PASSIVE-AGAIN?", "EvS2", "1700000902.000100", thread_ts="1700000901.000100")
        follow_up = await passive_job(p, "EvS2")
    [post] = p.slack.ui.posted_as(USER)
    assert post.token.startswith("xoxp"), "sent with the user's own token"
    assert post.channel == CHANNEL
    assert follow_up is not None, "the sent card no longer holds the thread"
