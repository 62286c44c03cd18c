"""The audit's start row is written while the model call is in flight, and always before the job is finished:
through the real worker, the fake model and a SQLite file, for a draft that completes, one whose model call fails
for good, and one that fails before any call goes out. Once written, the audit's write lets go of the draft: nothing
of it waits for the garbage collector."""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

from slack_backend.jobs.types import AIResponseJobData
from slack_backend.queue import Job, JobState
from slack_backend.store import AuditLog, create_engine
from tests.fakes.anthropic_server import Behaviour
from tests.support.engine import wait_until
from tests.support.pipeline import PipelineFactory
from tests.support.slack_requests import CHANNEL, EVENT_ID, THREAD_TS, mention_body, post_signed
from tests.test_work_once import finished, mention


async def audit_rows(tmp_path: Path) -> dict[str, tuple[str, int, int, str | None]]:
    """Each audited job's (status, attempts, input tokens, error kind), read from the service's SQLite file."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        rows = await AuditLog(engine).recent()
    finally:
        await engine.dispose()
    return {row.job_id: (row.status, row.attempts, row.input_tokens, row.error_kind) for row in rows}


async def test_the_start_row_is_there_while_the_model_thinks_and_the_draft_finishes_it(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """The model takes 0.8 s: the job's row says active during the call, and completed with the tokens after."""
    async with pipeline() as p:
        p.claude.script(Behaviour(delay_s=0.8))
        await mention(p.client, p.slack)

        async def model_called() -> bool:
            return len(p.claude.message_requests) == 1

        await wait_until(model_called, timeout_s=10)

        async def audited_active() -> bool:
            return (await audit_rows(tmp_path)).get(EVENT_ID, ("",))[0] == "active"

        await wait_until(audited_active, timeout_s=0.7, every_s=0.02)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.COMPLETED
    status, attempts, input_tokens, error_kind = (await audit_rows(tmp_path))[EVENT_ID]
    assert (status, attempts, error_kind) == ("completed", 1, None)
    assert input_tokens == job.result["input_tokens"] > 0


async def test_a_model_call_that_fails_for_good_leaves_its_row_failed(
    pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """A refused API key (401: not retried): the start row, begun as the call went out, is written and failed."""
    async with pipeline() as p:
        p.claude.script(Behaviour.unauthorized())
        await mention(p.client, p.slack)
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.FAILED
    assert len(p.claude.message_requests) == 1
    status, attempts, input_tokens, error_kind = (await audit_rows(tmp_path))[EVENT_ID]
    assert (status, attempts, input_tokens) == ("failed", 1, 0)
    assert error_kind is not None


async def test_a_job_that_fails_before_any_model_call_is_audited_too(pipeline: PipelineFactory, tmp_path: Path) -> None:
    """A mention in a channel thread the bot may not read (no user account to fall back on): no model call goes
    out, so nothing begins the start row during a call; it is written before the failure is."""
    async with pipeline() as p:
        p.slack.add_thread(CHANNEL, THREAD_TS, [{"user": "U0OTHER1", "text": "Ship it?", "ts": THREAD_TS}])
        response = await post_signed(p.client, mention_body(channel=CHANNEL))
        assert response.status_code == 200
        job = await finished(p.queue, EVENT_ID)

    assert job.state is JobState.FAILED
    assert p.claude.message_requests == []
    status, attempts, _, error_kind = (await audit_rows(tmp_path))[EVENT_ID]
    assert (status, attempts) == ("failed", 1)
    assert error_kind is not None


async def test_a_finished_draft_leaves_nothing_for_the_garbage_collector(pipeline: PipelineFactory) -> None:
    """With the collector off, a draft run through the service leaves none of its objects behind: its job, its data
    and its audit write are freed by reference counting when the draft ends, not kept in a cycle until the next
    collection (the audit write's task holds the call's context, which holds the write)."""
    gc.collect()
    gc.disable()
    try:
        async with pipeline() as p:
            await mention(p.client, p.slack)
            job = await finished(p.queue, EVENT_ID)
            assert job.state is JobState.COMPLETED
            del job  # read back from Redis by the test: not the worker's

            def left() -> list[str]:
                kinds = (Job, AIResponseJobData)
                return [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]

            async def nothing_left() -> bool:
                return not left()

            # The run's last steps (its log line, its task's end) follow the completion the test saw.
            with contextlib.suppress(AssertionError):
                await wait_until(nothing_left, timeout_s=2)
            still_there = left()
    finally:
        gc.enable()
    assert still_there == []
