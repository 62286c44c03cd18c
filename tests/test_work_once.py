"""Work done once, paid once: drafts are saved before delivery, reruns never call the model or post twice, and the
model's refusals, empty answers and cut-off answers are handled without paid retries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from slack_backend.queue import Job, JobState, Queue
from tests.fakes.anthropic_server import Behaviour
from tests.fakes.slack_server import FakeSlack, SlackCall
from tests.support.engine import wait_until
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import EVENT_ID, GROUP_DM, THREAD_TS, mention_body, post_signed


async def finished(queue: Queue, job_id: str, *, after_ms: int = 0) -> Job:
    """The job once it is completed or failed, with a finish time later than `after_ms`."""

    async def done() -> bool:
        job = await queue.get(job_id)
        return (
            job is not None and job.state in (JobState.COMPLETED, JobState.FAILED) and (job.finished_ms or 0) > after_ms
        )

    await wait_until(done, timeout_s=20)
    job = await queue.get(job_id)
    assert job is not None
    return job


def ephemerals(slack: FakeSlack) -> tuple[list[SlackCall], list[SlackCall]]:
    """chat.postEphemeral calls split into drafts (with blocks) and plain notes (progress, failure)."""
    calls = slack.calls_to("chat.postEphemeral")
    return [c for c in calls if c.params.get("blocks")], [c for c in calls if not c.params.get("blocks")]


async def mention(p_client: object, slack: FakeSlack) -> None:
    # A group DM, whose thread the bot token may read.
    thread = [{"user": "U0OTHER1", "text": "Lunch on Friday?", "ts": THREAD_TS}]
    slack.add_thread(GROUP_DM, THREAD_TS, thread, mpim=True)
    response = await post_signed(p_client, mention_body(channel=GROUP_DM))  # type: ignore[arg-type]
    assert response.status_code == 200


async def test_delivery_retry_delivers_the_saved_draft_without_calling_the_model_again(
    pipeline: PipelineFactory,
) -> None:
    """Slack fails the draft's post once: the retry posts the same saved draft, with one model call in all."""
    async with pipeline() as p:
        # The draft's first post fails with a 5xx (a mention's progress is a reaction, not a post): the job retries.
        p.slack.server_error_next("chat.postEphemeral", times=1)
        await mention(p.client, p.slack)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    assert job.attempts_made >= 1, "the failed delivery used an attempt"
    assert len(p.claude.message_requests) == 1
    drafts, notes = ephemerals(p.slack)
    assert len(drafts) == 2, "the failed try and the retry"
    assert drafts[0].params["blocks"] == drafts[1].params["blocks"], "the retry delivers the saved text"
    assert notes == [], "a mention's progress is a reaction, never an ephemeral note"
    assert job.result["input_tokens"] > 0


async def test_rerun_of_a_delivered_job_posts_nothing_and_calls_no_model(pipeline: PipelineFactory) -> None:
    """Once a job's draft was delivered, running it again (engine retry) makes no Slack call and no model call."""
    async with pipeline() as p:
        await mention(p.client, p.slack)
        first = await finished(p.queue, EVENT_ID)
        assert first.state is JobState.COMPLETED
        calls, model_calls = len(p.slack.calls), len(p.claude.message_requests)

        await p.queue.retry(EVENT_ID)
        second = await finished(p.queue, EVENT_ID, after_ms=first.finished_ms or 0)

    assert second.state is JobState.COMPLETED
    assert p.slack.calls[calls:] == [], "no progress note, no thread read, no draft"
    assert len(p.claude.message_requests) == model_calls == 1
    assert (second.result["delivered_via"], second.result["input_tokens"]) == ("none", 0)


async def test_refusal_fails_at_once_with_a_plain_message(pipeline: PipelineFactory) -> None:
    """stop_reason "refusal": one model call, the job fails without retries, and the user is told in plain words."""
    async with pipeline() as p:
        p.claude.script(Behaviour(text="", stop_reason="refusal"))
        await mention(p.client, p.slack)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.FAILED
    assert job.attempts_made == 1
    assert len(p.claude.message_requests) == 1
    drafts, notes = ephemerals(p.slack)
    assert drafts == []
    assert "declined" in notes[-1].params["text"]


async def test_empty_answer_fails_at_once_with_a_plain_message(pipeline: PipelineFactory) -> None:
    """An answer with no text is not retried (each retry is paid): one call, failed, the user told."""
    async with pipeline() as p:
        p.claude.script(Behaviour(text="  "))
        await mention(p.client, p.slack)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.FAILED
    assert job.attempts_made == 1
    assert len(p.claude.message_requests) == 1
    _, notes = ephemerals(p.slack)
    assert "empty draft" in notes[-1].params["text"]


async def test_answer_cut_at_max_tokens_is_delivered_marked_as_cut(pipeline: PipelineFactory) -> None:
    """stop_reason "max_tokens": the partial draft is delivered, and says it was cut short."""
    async with pipeline() as p:
        p.claude.script(Behaviour(text="Sure, Friday works, and about the budget I think we", stop_reason="max_tokens"))
        await mention(p.client, p.slack)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    [draft], _ = ephemerals(p.slack)
    shown = str(draft.params["blocks"])
    assert "about the budget I think we" in shown
    assert "cut short" in shown


def _jobs_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", "jobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_operator_retry_of_a_completed_job_is_refused_unless_regenerate(
    pipeline: PipelineFactory, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """`jobs retry` of a delivered job says so and changes nothing; `--regenerate` drafts and posts anew."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "PYTHONPATH") if key in os.environ}
    env |= {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
    }
    async with pipeline() as p:
        await mention(p.client, p.slack)
        first = await finished(p.queue, EVENT_ID)

        refused = await asyncio.to_thread(_jobs_cli, env, "retry", EVENT_ID)
        assert refused.returncode == 1
        assert "completed" in refused.stderr
        assert "--regenerate" in refused.stderr
        unchanged = await p.queue.get(EVENT_ID)
        assert unchanged is not None
        assert (unchanged.state, unchanged.finished_ms) == (JobState.COMPLETED, first.finished_ms)

        regenerated = await asyncio.to_thread(_jobs_cli, env, "retry", EVENT_ID, "--regenerate")
        assert regenerated.returncode == 0, regenerated.stderr
        second = await finished(p.queue, EVENT_ID, after_ms=first.finished_ms or 0)

    assert second.state is JobState.COMPLETED
    assert len(p.claude.message_requests) == 2
    drafts, _ = ephemerals(p.slack)
    assert len(drafts) == 2, "the regenerated draft is posted"
