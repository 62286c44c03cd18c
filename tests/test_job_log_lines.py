"""What production's log says about each job: one JSON line per finished run, with its wait and run times."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from slack_backend.logging import configure_logging
from slack_backend.queue import Job, Worker
from tests.support.engine import QueueFactory, finished, running, wait_until


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """INFO JSON logging (production's) into a buffer; the root logger and structlog are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines_about(stream: io.StringIO, job_id: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [r for r in records if r.get("job_id") == job_id]


async def test_a_completed_job_logs_one_line_with_wait_and_run(
    make_queue: QueueFactory, log_stream: io.StringIO
) -> None:
    """A job that completes writes exactly one INFO line about itself: "job completed" with wait_ms and run_ms."""
    queue = make_queue()
    added = await queue.add("draft", {"n": 1})
    await asyncio.sleep(0.05)  # a wait the line must show

    async def processor(job: Job) -> str:
        await asyncio.sleep(0.02)
        return "ok"

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 1))
    (line,) = lines_about(log_stream, added.job_id)
    assert line["event"] == "job completed"
    assert line["level"] == "info"
    assert line["logger"] == "slack_backend.queue.worker"
    # Milliseconds on Redis's clock, which the worker's sleep and the wait before it are measured against.
    assert line["wait_ms"] >= 40
    assert line["run_ms"] >= 15
    assert line["queue"] == queue.name


async def test_a_failed_job_logs_one_warning_with_its_reason_and_times(
    make_queue: QueueFactory, log_stream: io.StringIO
) -> None:
    """A job that fails for good writes one WARNING line: "job failed" with the reason, wait_ms and run_ms."""
    queue = make_queue()
    added = await queue.add("draft", {"n": 1}, attempts=1)

    async def processor(job: Job) -> None:
        raise RuntimeError("model refused")

    async with running(Worker(queue, processor)):
        await wait_until(lambda: finished(queue, 1))
    (line,) = lines_about(log_stream, added.job_id)
    assert (line["event"], line["level"], line["reason"]) == ("job failed", "warning", "model refused")
    assert line["wait_ms"] >= 0
    assert line["run_ms"] >= 0
