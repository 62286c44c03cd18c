"""What a draft waits for on its way to the user: the Redis round trips between the request and the post, seen where
Redis sees them (MONITOR). The delivery ledger is read while the model thinks, and still stops a second post; the
requester's name and time zone come from this process's memory for a few minutes after Redis gave them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis

from slack_backend.jobs.context import LOCAL_MEMBER_TTL_S, ContextReader
from slack_backend.jobs.ledger import RedisDeliveryLedger
from slack_backend.jobs.types import AIResponseJobData, TriggerKind
from slack_backend.queue import BulkJob, Job, JobState, Worker
from tests.fakes.anthropic_server import Behaviour
from tests.fakes.slack_server import FakeSlack
from tests.support.clocks import MonotonicClock
from tests.support.engine import QueueFactory, running, wait_until
from tests.support.engine import finished as finished_jobs
from tests.support.monitor import Seen, monitored
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import EVENT_ID, USER
from tests.test_work_once import ephemerals, finished, mention

MODEL_S = 0.8


async def test_a_new_drafts_ledger_read_is_done_while_the_model_thinks(
    pipeline: PipelineFactory, redis_client: Redis
) -> None:
    """The model takes 0.8 s. The ledger is read once for the job, before the model answers: after the answer,
    nothing stands between the saved draft and its post but the post."""
    async with pipeline() as p:
        p.claude.script(Behaviour(delay_s=MODEL_S))
        async with monitored(redis_client) as seen:
            await mention(p.client, p.slack)
            job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    drafts, _ = ephemerals(p.slack)
    assert len(drafts) == 1
    answered_at = p.claude.message_requests[0].received_s + MODEL_S
    reads = [at for at, command in seen.of("ZSCORE", ":delivered") if command[-1].strip('"') == EVENT_ID]
    assert len(reads) == 1, seen.of("ZSCORE", ":delivered")
    assert reads[0] < answered_at, "the ledger was read after the model answered"


async def test_a_ledger_mark_read_during_the_call_still_stops_a_second_post(pipeline: PipelineFactory) -> None:
    """The job's draft row is gone (a database restored from before it) but the ledger says it was posted: the run
    pays for its model call, as it cannot know better, and posts nothing."""
    async with pipeline() as p:
        await RedisDeliveryLedger(p.queue.redis, p.queue).mark_delivered(EVENT_ID)
        await mention(p.client, p.slack)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    assert len(p.claude.message_requests) == 1
    drafts, _ = ephemerals(p.slack)
    assert drafts == []
    assert job.result is not None
    assert job.result["delivery_parts"] == 0


@contextmanager
def no_lookups(slack: FakeSlack) -> Iterator[None]:
    before = len(slack.calls_to("users.info"))
    yield
    assert len(slack.calls_to("users.info")) == before, "users.info was asked again"


def _slash(user: str) -> AIResponseJobData:
    return AIResponseJobData(
        workspace_id="T0FAKE",
        user_id=user,
        channel_id="C0CHANNEL",
        trigger=TriggerKind.SLASH_COMMAND,
        trigger_text="Can you send me the Q3 numbers?",
        response_url=None,
    )


async def test_a_users_name_is_read_from_redis_once_in_minutes(redis_client: Redis, prefix: str) -> None:
    """users.info once; then Redis once; then nothing from Redis until LOCAL_MEMBER_TTL_S have passed, when it is
    read from Redis again (not from Slack). Another process (another reader) reads Redis, not Slack."""
    async with FakeSlack(bot_token="xoxb-round-trips", team_id="T0FAKE") as slack:
        slack.add_person(USER, "kenji", display_name="Kenji Sato", tz="Asia/Tokyo")
        clock = MonotonicClock()

        def reader() -> ContextReader:
            return ContextReader(
                tokens=None,
                slack_api_url=slack.base_url,
                limiter=None,
                redis=redis_client,
                cache_prefix=prefix,
                clock=clock,
            )

        first, other = reader(), reader()
        async with monitored(redis_client) as seen:
            asked = await first.read(_slash(USER), "xoxb-round-trips")
            assert len(slack.calls_to("users.info")) == 1
            with no_lookups(slack):
                again = await first.read(_slash(USER), "xoxb-round-trips")
                clock.now_s += LOCAL_MEMBER_TTL_S - 1
                await first.read(_slash(USER), "xoxb-round-trips")
                reads_within = len(seen.of("GET", ":slack-member:"))
                clock.now_s += 2
                await first.read(_slash(USER), "xoxb-round-trips")
                await other.read(_slash(USER), "xoxb-round-trips")

    assert asked.names == again.names == {USER: "Kenji Sato"}
    assert asked.tz == again.tz == "Asia/Tokyo"
    gets = seen.of("GET", ":slack-member:")
    # The first read asked Redis (a miss) before Slack; the next two within the TTL asked nothing.
    assert reads_within == 1, gets
    assert len(gets) == 3, "past the TTL, and in another reader, the name comes from Redis again"


async def test_an_idle_worker_starts_lone_work_with_the_fetch_behind_its_wait(
    make_queue: QueueFactory, redis_client: Redis
) -> None:
    """An idle worker blocks on the wake list with a fetch pipelined behind the wait. That fetch starts what was
    added and says when nothing else can start: the worker then waits again at once, with no second fetch to learn
    it. One job, then three added together: one fetch each time, every job run once."""
    queue = make_queue()
    fetch_sha = queue._scripts.wire("fetch")[0]
    ran: list[str] = []

    async def processor(job: Job) -> None:
        ran.append(job.id)

    def fetches(seen: Seen) -> int:
        return sum(1 for _, command in seen.commands if command[0].upper() == "EVALSHA" and fetch_sha in command[1])

    async with monitored(redis_client) as seen, running(Worker(queue, processor)):

        async def waits(n: int) -> bool:
            return len(seen.of("BLPOP", ":wake")) >= n

        await wait_until(lambda: waits(1))
        before = fetches(seen)
        await queue.add("lone", {})
        await wait_until(lambda: finished_jobs(queue, 1))
        await wait_until(lambda: waits(2))
        after_one = fetches(seen)
        await queue.add_bulk([BulkJob("together", {"i": i}) for i in range(3)])
        await wait_until(lambda: finished_jobs(queue, 4))
        await wait_until(lambda: waits(3))
        after_three = fetches(seen)

    assert len(ran) == len(set(ran)) == 4
    assert after_one - before == 1, "a lone job took more than the fetch behind the wait"
    assert after_three - after_one == 1, "three jobs added together took more than one fetch"
