"""Tests of the `slack-backend jobs` operator commands against a real Redis: through the click app in-process, and
as real processes where the exit code or stderr of the process is the point."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest
from redis.asyncio import Redis

from slack_backend.queue import BulkJob, JobOptions, JobState, Queue
from tests.support.cli import run_in_process

SECRET_TEXT = "please draft my resignation letter"
TWO_HOURS_MS = 2 * 3_600_000


class JobsCli(Protocol):
    async def __call__(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None, process: bool = False
    ) -> subprocess.CompletedProcess[str]: ...


def _run(args: Sequence[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", "jobs", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _run_in_process(args: Sequence[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    return run_in_process(["jobs", *args], env, stdin)


@pytest.fixture
def jobs_cli(redis_url: str, prefix: str, tmp_path: Path) -> JobsCli:
    """Factory: `await jobs_cli("counts", "--json")` runs the CLI on this test's queue with a minimal environment:
    in this process by default, or as a real `python -m slack_backend.cli` process with `process=True` (the tests
    of exit codes and of what reaches stderr keep one real process each)."""
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    base |= {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        "LOG_FORMAT": "json",
        # Wide enough that tables do not wrap ids and reasons.
        "COLUMNS": "200",
    }

    async def run(
        *args: str, stdin: str = "", env: dict[str, str] | None = None, process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        # A thread, so the test's event loop (and its Redis client) stays usable while the CLI runs its own.
        return await asyncio.to_thread(_run if process else _run_in_process, args, base | (env or {}), stdin)

    return run


@pytest.fixture
def queue(redis_client: Redis, prefix: str) -> Queue:
    """The ai-responses queue as the CLI sees it under this test's prefix."""
    return Queue("ai-responses", connection=redis_client, prefix=prefix)


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a successful --json command printed (fails on anything else on stdout)."""
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def failed_one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The reason a command that exited 1 gave: one line on stderr, nothing on stdout, no traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


async def add_waiting(queue: Queue, n: int, *, group: str = "T-waiting", delay_ms: int = 0) -> list[str]:
    jobs = [
        BulkJob("ai-response", {"text": SECRET_TEXT, "n": i}, JobOptions(group=group, delay_ms=delay_ms))
        for i in range(n)
    ]
    return [r.job_id for r in await queue.add_bulk(jobs)]


async def add_failed(queue: Queue, n: int, *, group: str = "T-failing") -> list[str]:
    """Add n jobs and fail them for good through the real fetch and fail scripts; returns ids, oldest first."""
    await add_waiting(queue, n, group=group)
    failed: list[str] = []
    while len(failed) < n:
        # fetch.lua replies {status, wait_ms, id1, rec1, data1, token1, id2, ...}.
        reply = list(await queue.call("fetch", "w", 30000, 500))
        started = [(str(reply[i]), str(reply[i + 3])) for i in range(2, len(reply), 4)]
        assert started, f"fetch started nothing (status {reply[0]})"
        for job_id, token in started:
            # fail.lua: id, token, reason, stack, retry delay (-1 final), keep count (-1 all), keep age, events, stacks.
            code = (await queue.call("fail", job_id, token, "boom", "stack", -1, -1, 0, 1000, 10))[0]
            assert int(code) == 0
            failed.append(job_id)
    return failed


async def test_counts_reports_states_pause_hold_and_busiest_workspaces(queue: Queue, jobs_cli: JobsCli) -> None:
    """`counts --json` gives jobs per state, paused, hold and workspaces by waiting jobs; the table names them."""
    await add_failed(queue, 2)
    await add_waiting(queue, 3, group="T-busy")
    await add_waiting(queue, 1, group="T-quiet")
    await add_waiting(queue, 1, group="T-later", delay_ms=3_600_000)
    await queue.pause()

    doc = as_json(await jobs_cli("counts", "--json"))
    assert doc == {
        "queue": "ai-responses",
        "counts": {"waiting": 4, "delayed": 1, "active": 0, "completed": 0, "failed": 2},
        "paused": True,
        "hold_remaining_ms": 0,
        "groups": [
            {"group": "T-busy", "waiting": 3, "active": 0},
            {"group": "T-quiet", "waiting": 1, "active": 0},
        ],
    }

    table = await jobs_cli("counts")
    assert table.returncode == 0, table.stderr
    for word in ("waiting", "delayed", "failed", "paused", "T-busy", "T-quiet"):
        assert word in table.stdout


async def test_list_pages_jobs_of_a_state_without_their_data(queue: Queue, jobs_cli: JobsCli) -> None:
    """`list failed` shows newest first, pages with --limit/--offset, and never prints job data."""
    ids = await add_failed(queue, 5)
    newest_first = list(reversed(ids))

    doc = as_json(await jobs_cli("list", "failed", "--limit", "2", "--offset", "1", "--json"))
    assert (doc["state"], doc["total"], doc["offset"], doc["limit"]) == ("failed", 5, 1, 2)
    assert [j["id"] for j in doc["jobs"]] == [job.id for job in await queue.get_jobs(JobState.FAILED, 1, 2)]
    first = doc["jobs"][0]
    assert first["name"] == "ai-response"
    assert first["group"] == "T-failing"
    assert (first["attempts_made"], first["attempts"]) == (1, 4)
    assert first["failed_reason"] == "boom"
    assert first["created_ms"] > 0
    assert first["finished_ms"] >= first["processed_ms"] >= first["created_ms"]
    assert "data" not in first

    table = await jobs_cli("list", "FAILED")
    assert table.returncode == 0, table.stderr
    for job_id in newest_first:
        assert job_id in table.stdout
    assert "1/4" in table.stdout
    assert "boom" in table.stdout
    assert SECRET_TEXT not in table.stdout


async def test_bad_state_is_a_usage_error(jobs_cli: JobsCli) -> None:
    """An unknown STATE exits 2 naming the valid states; `clean active` is refused the same way."""
    proc = await jobs_cli("list", "stuck", process=True)
    assert proc.returncode == 2
    assert "waiting, delayed, active, completed, failed" in proc.stderr
    proc = await jobs_cli("clean", "active", "--older-than", "1h")
    assert proc.returncode == 2
    assert "cannot be cleaned" in proc.stderr


async def test_show_prints_fields_and_stack_but_only_data_keys(queue: Queue, jobs_cli: JobsCli) -> None:
    """`show` gives every field, reason and stack traces; data values appear only with --data."""
    [job_id] = await add_failed(queue, 1)

    doc = as_json(await jobs_cli("show", job_id, "--json"))
    assert doc["id"] == job_id
    assert doc["state"] == "failed"
    assert doc["failed_reason"] == "boom"
    assert doc["stacktrace"] == ["stack"]
    assert doc["starts"] == 1
    assert doc["backoff"]["kind"] == "exponential"
    assert doc["data_keys"] == ["n", "text"]
    assert "data" not in doc
    assert SECRET_TEXT not in json.dumps(doc)

    table = await jobs_cli("show", job_id)
    assert table.returncode == 0, table.stderr
    assert "boom" in table.stdout
    assert "stack" in table.stdout
    assert "text" in table.stdout
    assert SECRET_TEXT not in table.stdout

    with_data = as_json(await jobs_cli("show", job_id, "--data", "--json"))
    assert with_data["data"] == {"text": SECRET_TEXT, "n": 0}
    table = await jobs_cli("show", job_id, "--data")
    assert SECRET_TEXT in table.stdout


async def test_unknown_job_id_exits_1(jobs_cli: JobsCli) -> None:
    """show, retry and remove of an id the queue does not hold exit 1 with one line on stderr."""
    for command in ("show", "retry", "remove"):
        line = failed_one_line(await jobs_cli(command, "no-such-job", "--json"))
        assert line == "job 'no-such-job' not found"


async def test_retry_sends_a_failed_job_back_and_refuses_a_waiting_one(queue: Queue, jobs_cli: JobsCli) -> None:
    """`retry` makes a failed job waiting with attempts reset; retrying a waiting job exits 1 naming its state."""
    [failed_id] = await add_failed(queue, 1)
    [waiting_id] = await add_waiting(queue, 1)

    assert as_json(await jobs_cli("retry", failed_id, "--json")) == {"retried": failed_id}
    job = await queue.get(failed_id)
    assert job is not None
    assert (job.state, job.attempts_made, job.failed_reason) == (JobState.WAITING, 0, None)

    line = failed_one_line(await jobs_cli("retry", waiting_id))
    assert "is waiting" in line
    assert "only failed or completed" in line


async def test_retry_failed_retries_5000_jobs_in_seconds(queue: Queue, jobs_cli: JobsCli) -> None:
    """`retry-failed` pages through 5,000 failed jobs quickly, resets them all, and shows a progress bar."""
    ids = await add_failed(queue, 5000)

    started = time.monotonic()
    proc = await jobs_cli("retry-failed")
    elapsed_s = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed_s < 20
    assert "retrying failed jobs" in proc.stderr
    assert "5000/5000" in proc.stderr
    assert "5000 failed jobs are waiting again" in proc.stdout

    counts = await queue.counts()
    assert (counts[JobState.WAITING], counts[JobState.FAILED]) == (5000, 0)
    jobs = await queue.get_many(ids)
    assert len(jobs) == 5000
    assert all(j.state is JobState.WAITING and j.attempts_made == 0 and j.failed_reason is None for j in jobs)


async def test_retry_failed_honours_limit_and_prints_json(queue: Queue, jobs_cli: JobsCli) -> None:
    """`retry-failed --limit 2 --json` retries two (newest first) and reports counts as JSON only."""
    ids = await add_failed(queue, 3)
    doc = as_json(await jobs_cli("retry-failed", "--limit", "2", "--json"))
    assert doc == {"queue": "ai-responses", "retried": 2, "skipped": 0}
    assert await queue.job_ids(JobState.FAILED) == [ids[0]]


async def test_remove_deletes_a_job(queue: Queue, jobs_cli: JobsCli) -> None:
    """`remove` deletes the job and reports its id."""
    [job_id] = await add_waiting(queue, 1)
    assert as_json(await jobs_cli("remove", job_id, "--json")) == {"removed": job_id}
    assert await queue.get(job_id) is None


async def test_clean_removes_only_older_jobs(queue: Queue, redis_client: Redis, jobs_cli: JobsCli) -> None:
    """`clean failed --older-than 2h` deletes jobs that failed over two hours ago and keeps the recent ones."""
    old = await add_failed(queue, 3)
    recent = await add_failed(queue, 2)
    # Pretend the first three failed three hours ago: the failed set is scored by finish time.
    three_hours_ago_ms = int(time.time() * 1000) - 3 * 3_600_000
    await redis_client.zadd(queue.keys.key("failed"), dict.fromkeys(old, three_hours_ago_ms), xx=True)

    doc = as_json(await jobs_cli("clean", "failed", "--older-than", "2h", "--json"))
    assert doc == {"queue": "ai-responses", "state": "failed", "older_than_ms": TWO_HOURS_MS, "removed": 3}
    assert sorted(await queue.job_ids(JobState.FAILED)) == sorted(recent)
    assert await queue.get_many(old) == []

    proc = await jobs_cli("clean", "failed", "--older-than", "7d")
    assert proc.returncode == 0, proc.stderr
    assert "removed 0 failed jobs" in proc.stdout
    assert "cleaning failed jobs" in proc.stderr
    assert len(await queue.job_ids(JobState.FAILED)) == 2


async def test_bad_duration_is_a_usage_error(jobs_cli: JobsCli) -> None:
    """A DURATION that is not `<n>[ms|s|m|h|d]` exits 2."""
    for bad in ("soon", "-5s"):
        proc = await jobs_cli("clean", "failed", "--older-than", bad)
        assert proc.returncode == 2, bad
        assert "is not a duration" in proc.stderr


async def test_pause_and_resume_flip_the_queue(queue: Queue, jobs_cli: JobsCli) -> None:
    """`pause` and `resume` set and clear the paused flag every worker obeys."""
    assert as_json(await jobs_cli("pause", "--json")) == {"paused": True}
    assert await queue.is_paused()
    proc = await jobs_cli("resume")
    assert proc.returncode == 0, proc.stderr
    assert "resumed" in proc.stdout
    assert not await queue.is_paused()


async def test_drain_asks_then_removes_waiting_jobs(queue: Queue, jobs_cli: JobsCli) -> None:
    """`drain` asks first (no: exit 1, nothing deleted), removes waiting jobs, and delayed ones only with --delayed."""
    await add_waiting(queue, 3)
    await add_waiting(queue, 2, delay_ms=3_600_000)

    refused = await jobs_cli("drain", stdin="n\n")
    assert refused.returncode == 1
    assert "Delete 3 waiting jobs" in refused.stderr
    assert refused.stdout == ""
    assert refused.stderr.rstrip().endswith("not confirmed; nothing was deleted")
    assert (await queue.counts())[JobState.WAITING] == 3

    confirmed = await jobs_cli("drain", stdin="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "removed 3 jobs" in confirmed.stdout
    counts = await queue.counts()
    assert (counts[JobState.WAITING], counts[JobState.DELAYED]) == (0, 2)

    doc = as_json(await jobs_cli("drain", "--delayed", "--yes", "--json"))
    assert doc == {"queue": "ai-responses", "removed": 2, "include_delayed": True}
    assert (await queue.counts())[JobState.DELAYED] == 0


async def test_unreachable_redis_exits_1_with_the_password_masked(jobs_cli: JobsCli) -> None:
    """With Redis down, a command exits 1 with one line naming the URL, password masked, and no traceback."""
    proc = await jobs_cli("counts", "--json", env={"REDIS_URL": "redis://:hunter2-secret@127.0.0.1:1/0"}, process=True)
    line = failed_one_line(proc)
    assert line.startswith("cannot reach Redis at redis://:********@127.0.0.1:1/0: ")
    assert "hunter2" not in proc.stderr
