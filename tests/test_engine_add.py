"""The add path: the record the client half-encodes, re-sent adds, and the one-by-one path against the bulk one."""

from __future__ import annotations

import pytest

from slack_backend.queue import Backoff, BulkJob, InvalidJobDataError, Job, JobOptions, JobState, Worker
from tests.support.engine import QueueFactory, job_in_state, running, wait_until


async def test_ids_names_and_groups_with_json_specials_survive_the_record(make_queue: QueueFactory) -> None:
    """Quotes, backslashes, slashes, control characters and non-ASCII text in an id, name or group come back
    as given, and the scripts that decode the record (fetch, complete) read it."""
    queue = make_queue()
    job_id, name, group = 'ev "1"\\/\té', 'name "x"\\/\n', 'grp "ü"\\/'
    added = await queue.add(name, {"k": 'v"\\'}, job_id=job_id, group=group, cost=7)
    assert added.job_id == job_id
    seen: list[Job] = []

    async def process(job: Job) -> None:
        seen.append(job)

    async with running(Worker(queue, process)):
        await wait_until(job_in_state(queue, job_id, JobState.COMPLETED))
    job = await queue.get(job_id)
    assert job is not None
    assert (job.id, job.name, job.group, job.cost, job.data) == (job_id, name, group, 7, {"k": 'v"\\'})
    assert [(j.id, j.group) for j in seen] == [(job_id, group)]


async def test_a_re_sent_add_of_a_library_id_makes_one_job_and_exact_counts(make_queue: QueueFactory) -> None:
    """The same add sent twice (a reply lost, redis-py sends again) is answered `created=0` the second time and
    counts the job once, in the queue and in its group."""
    queue = make_queue()
    spec = queue._spec("x", {"n": 1}, JobOptions(group="g"))
    first = list(await queue.call("add", queue.dedup_ttl_ms, spec))
    second = list(await queue.call("add", queue.dedup_ttl_ms, spec))
    assert first[1] == 1
    assert second == [first[0], 0]
    assert (await queue.counts())[JobState.WAITING] == 1
    assert [(g.group, g.waiting) for g in await queue.groups()] == [("g", 1)]


async def test_one_by_one_and_bulk_adds_store_the_same_record(make_queue: QueueFactory) -> None:
    """`add` (its own wire path) and `add_bulk` store the same fields for the same options, delays included."""
    queue = make_queue()
    options = JobOptions(
        priority=3, attempts=2, backoff=Backoff("fixed", 50), group="g", cost=5, delay_ms=60_000, job_id="one"
    )
    await queue.add(
        "x",
        {"n": 1},
        job_id="one",
        priority=3,
        attempts=2,
        backoff=Backoff("fixed", 50),
        group="g",
        cost=5,
        delay_ms=60_000,
    )
    bulk_options = JobOptions(**{**options.__dict__, "job_id": "two"})
    await queue.add_bulk([BulkJob("x", {"n": 1}, bulk_options)])
    one, two = await queue.get_many(["one", "two"])
    assert one.state is two.state is JobState.DELAYED
    assert one.due_ms is not None
    assert two.due_ms is not None
    fields = ("name", "data", "group", "priority", "attempts", "attempts_made", "starts", "stalls", "backoff", "cost")
    assert [getattr(one, f) for f in fields] == [getattr(two, f) for f in fields]
    assert two.seq == one.seq + 1
    assert (await queue.counts())[JobState.DELAYED] == 2


async def test_a_bad_job_name_is_refused_before_anything_is_written(make_queue: QueueFactory) -> None:
    """A name that is not text, empty or holds NUL is refused with InvalidJobDataError, cached heads or not."""
    queue = make_queue()
    await queue.add("ok", {})
    for name in (["x"], "", "a\0b"):
        with pytest.raises(InvalidJobDataError):
            await queue.add(name, {})  # type: ignore[arg-type]
    assert (await queue.counts())[JobState.WAITING] == 1


async def test_the_record_takes_redis_clock_and_exact_sequence_numbers(make_queue: QueueFactory) -> None:
    """created_ms is Redis's TIME in ms (add.lua writes it from TIME's text), due_ms that plus the delay, and a
    sequence number stays exact where Lua's own number text (14 significant digits) would round it."""
    queue = make_queue()
    before_s, before_us = await queue.redis.time()
    await queue.add("x", {}, job_id="now")
    await queue.add("x", {}, job_id="later", delay_ms=5_000)
    after_s, after_us = await queue.redis.time()
    low, high = before_s * 1000 + before_us // 1000, after_s * 1000 + after_us // 1000
    now, later = await queue.get_many(["now", "later"])
    assert low <= now.created_ms <= high
    assert later.due_ms == later.created_ms + 5_000
    await queue.redis.hset(queue.keys.key("meta"), "seq", 1_234_567_890_123_456)
    await queue.add("x", {}, job_id="big")
    big = await queue.get("big")
    assert big is not None
    assert big.seq == 1_234_567_890_123_457
    # A spec without an id is numbered by the queue: its id is the sequence number, whole.
    spec = queue._spec("x", {}, JobOptions())
    numbered = list(await queue.call("add", queue.dedup_ttl_ms, spec[spec.index("\0") :]))
    assert numbered == ["1234567890123458", 1]
    assert await queue.job_ids(JobState.WAITING) == ["now", "big", "1234567890123458"]
