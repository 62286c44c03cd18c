"""Hostile ids cannot break the key structure: every id lives in a hash field or set member, never in a key name."""

from __future__ import annotations

import pytest

from slack_backend.jobs import queue_ai_response
from slack_backend.queue import InvalidJobDataError, Job, JobState, Worker
from slack_backend.queue._keys import KEY_NAMES
from tests.support.engine import QueueFactory, finished, running, wait_until

HOSTILE = ["{sb:other}:jobs", "a}b{c", "x:y:z", "with spaces and\ttabs", "ünïcödé 🚀", "*", "?[]", "-1", "1e9x"]


@pytest.mark.parametrize("job_id", HOSTILE)
async def test_hostile_job_ids_and_groups_stay_inside_the_queue_keys(make_queue: QueueFactory, job_id: str) -> None:
    """A job id or group with braces, colons, spaces or glob characters runs normally and adds no key."""
    queue = make_queue()
    # The whole keyspace, not only keys under this queue's tag: an id that escaped into a key of its own (another
    # tag, say) would show up anywhere. Nothing else writes to this server while the test runs.
    before = set(await queue.redis.keys("*"))
    await queue.add("j", {"v": 1}, job_id=job_id, group=job_id)

    async def processor(job: Job) -> str:
        return job.id

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 1))
    job = await queue.get(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result == job_id
    assert job.group == job_id
    added = set(await queue.redis.keys("*")) - before
    assert added, "the job did write its keys"
    assert added <= {queue.keys.key(name) for name in KEY_NAMES}


async def test_ten_kilobyte_ids_are_refused_and_nothing_is_written(make_queue: QueueFactory) -> None:
    """An id or group of 10 kB is refused with a clear error before anything reaches Redis."""
    queue = make_queue()
    with pytest.raises(InvalidJobDataError, match="longer than"):
        await queue.add("j", {}, job_id="x" * 10_240)
    with pytest.raises(InvalidJobDataError, match="longer than"):
        await queue.add("j", {}, group="g" * 10_240)
    assert await queue.redis.keys(f"{queue.keys.tag}*") == []


@pytest.mark.parametrize("workspace", ["T{evil}", "T0:1", "T0 1", "t0lower", "T" * 80])
async def test_hostile_workspace_ids_never_reach_the_queue(make_queue: QueueFactory, workspace: str) -> None:
    """A workspace id that is not a Slack id is refused by the job data model; nothing is written."""
    queue = make_queue("ai-responses")
    data = {
        "workspace_id": workspace,
        "user_id": "U0123ABCD",
        "channel_id": "C0123ABCD",
        "trigger": "mention",
        "trigger_text": "hi",
    }
    with pytest.raises(InvalidJobDataError, match="workspace_id"):
        await queue_ai_response(queue, data)
    assert await queue.redis.keys(f"{queue.keys.tag}*") == []
