"""The shipped commands as users run them: `run`, `serve` and `worker --processes N` as real processes, real signals.

Timing: bounds here are event orders (the job was in the model call when the signal came; the draft was posted
before the exit) except where a process must start or exit; those get tens of seconds, since a fresh interpreter on
a busy 2-core machine takes seconds to import, and the claim is "it exits", not "it exits fast".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from slack_backend.config import load_settings
from slack_backend.jobs import queue_ai_response
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import JobState, Queue
from slack_backend.slack.signing import sign_request
from slack_backend.store import AuditLog, create_engine
from tests.fakes.anthropic_server import Behaviour, FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.support.engine import wait_until
from tests.support.pipeline import API_KEY
from tests.support.redis_server import free_port
from tests.support.services import Service, Services, gone
from tests.support.slack_requests import BOT_TOKEN, CHANNEL, SECRET, TEAM, USER

START_S = 60  # a fresh interpreter importing the app on a loaded 2-core machine: seconds, rarely tens
EXIT_S = 30  # draining finishes the few-second jobs below, then Redis and uvicorn close

EnvFactory = Callable[..., dict[str, str]]


@pytest.fixture
def service_env(redis_url: str, prefix: str, slack: FakeSlack, claude: FakeAnthropic, tmp_path: Path) -> EnvFactory:
    """Factory: the environment of a service wired to this test's Redis prefix, fakes and a tmp_path database."""

    def factory(**overrides: str) -> dict[str, str]:
        return {
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_API_URL": slack.base_url,
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_BASE_URL": claude.base_url,
            "LOG_FORMAT": "json",
            "JOB_BACKOFF_MS": "200",
            "SHUTDOWN_TIMEOUT_S": "60",
            **overrides,
        }

    return factory


@pytest.fixture
def queue(redis_client: Redis, redis_url: str, prefix: str) -> Queue:
    return ai_responses_queue(redis_client, load_settings({"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}))


def signed_command(slack: FakeSlack, response_id: str, text: str) -> tuple[bytes, dict[str, str]]:
    """A slash command whose draft goes to `slack.response_url(response_id)`, signed the way Slack signs it."""
    body = urlencode(
        {
            "command": "/draft",
            "text": text,
            "team_id": TEAM,
            "channel_id": CHANNEL,
            "user_id": USER,
            "response_url": slack.response_url(response_id),
            "trigger_id": f"{response_id}.trigger",
        }
    ).encode()
    return body, {"Content-Type": "application/x-www-form-urlencoded", **sign_request(SECRET, body)}


async def post_command(service: Service, slack: FakeSlack, response_id: str, text: str) -> float:
    """Send a signed slash command to the running web app over TCP; return the seconds until its 200 ack."""
    body, headers = signed_command(slack, response_id, text)
    assert service.base_url is not None
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        started = time.monotonic()
        response = await http.post("/slack/events", content=body, headers=headers)
        acked_s = time.monotonic() - started
    assert response.status_code == 200, response.text
    return acked_s


def drafted(slack: FakeSlack, response_id: str) -> Callable[[], Awaitable[bool]]:
    """A condition: the fake received a draft (a post with blocks) at that response_url."""

    async def check() -> bool:
        return any("blocks" in post for post in slack.response_posts.get(response_id, []))

    return check


async def queue_mention(queue: Queue, n: int) -> str:
    """Queue an ai-responses job directly (as the web app would) and return its id."""
    data = {
        "workspace_id": TEAM,
        "user_id": USER,
        "channel_id": CHANNEL,
        "trigger": "mention",
        "trigger_text": f"job {n}: what should I say?",
        "message_ts": f"1700000001.{n:06d}",
    }
    return (await queue_ai_response(queue, data, job_id=f"EvProc{n}-{uuid.uuid4().hex[:6]}")).job_id


async def model_calls(claude: FakeAnthropic, n: int) -> None:
    async def arrived() -> bool:
        return len(claude.message_requests) >= n

    await wait_until(arrived, timeout_s=START_S, every_s=0.05)


async def state_of(queue: Queue, job_id: str) -> JobState | None:
    job = await queue.get(job_id)
    return None if job is None else job.state


def two_free_ports() -> int:
    """A port p such that p and p + 1 are both free now (a worker child i serves metrics on p + i)."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise AssertionError("no two adjacent free ports")


async def test_run_acks_a_command_and_sigterm_lets_the_running_job_finish(
    services: Services, service_env: EnvFactory, slack: FakeSlack, claude: FakeAnthropic, queue: Queue
) -> None:
    """`run` acks a signed command in < 3 s and posts the draft; SIGTERM mid-job lets that job post, then exits 0."""
    claude.script(Behaviour.success(), Behaviour.hang(3.0))
    port = free_port()
    service = services.start("run", env=service_env(), port=port)
    await service.wait_http_ok("/readyz", timeout_s=START_S)  # with the worker's heartbeat
    assert await post_command(service, slack, "first", "Can you review my PR?") < 3  # Slack's ack window
    await wait_until(drafted(slack, "first"), timeout_s=30, every_s=0.05)
    await post_command(service, slack, "second", "And the Q3 numbers?")
    await model_calls(claude, 2)  # the second job is now inside its 3 s model call
    service.send(signal.SIGTERM)
    assert await service.exit_code(EXIT_S) == 0
    assert await drafted(slack, "second")(), "the job running at SIGTERM finished and posted before the exit"
    counts = await queue.counts()
    assert (counts[JobState.COMPLETED], counts[JobState.ACTIVE]) == (2, 0)
    assert '"service stopped"' in service.log_text()


@pytest.mark.parametrize(
    ("command", "expected_code"),
    [(["run"], 130), (["worker"], 130), (["worker", "--processes", "2"], 1)],
    ids=["run", "worker", "worker-processes-2"],
)
async def test_second_signal_exits_at_once_leaving_the_job_to_the_stall_check(
    services: Services,
    service_env: EnvFactory,
    claude: FakeAnthropic,
    queue: Queue,
    command: list[str],
    expected_code: int,
) -> None:
    """A first SIGTERM waits for a hung job (still up 1 s later); a second ends it at once, leaving the job active."""
    claude.script(Behaviour.hang(60.0))
    port = free_port() if command == ["run"] else None
    service = services.start(*command, env=service_env(), port=port)
    await service.wait_log('"service started"', timeout_s=START_S, count=2 if "--processes" in command else 1)
    job_id = await queue_mention(queue, 1)
    await model_calls(claude, 1)
    service.send(signal.SIGTERM)
    await service.wait_log('"shutdown requested"', timeout_s=10)
    await asyncio.sleep(1.0)
    assert service.proc.poll() is None, "the first signal drains: the hung job keeps the process up"
    service.send(signal.SIGTERM)
    # os._exit in each process: no waiting on the 60 s job; 10 s only covers scheduling on a busy machine.
    assert await service.exit_code(10) == expected_code
    assert await state_of(queue, job_id) is JobState.ACTIVE, "not released: the stall check recovers it"
    assert services.owned_pids() == [], "no worker process outlives the command"


async def test_worker_processes_drain_every_child_on_sigterm_and_exit_0(
    services: Services, service_env: EnvFactory, slack: FakeSlack, claude: FakeAnthropic, queue: Queue
) -> None:
    """`worker --processes 2 --concurrency 1`: child i serves metrics on port+i; SIGTERM finishes both jobs, exit 0."""
    claude.script(Behaviour.hang(3.0), Behaviour.hang(3.0))
    metrics_port = two_free_ports()
    service = services.start(
        "worker", "--processes", "2", "--concurrency", "1", env=service_env(WORKER_METRICS_PORT=str(metrics_port))
    )
    await service.wait_log('"service started"', timeout_s=START_S, count=2)
    started = [json.loads(line) for line in service.log_text().splitlines() if '"service started"' in line]
    # Each child froze its start-up heap (app.freeze_startup_heap): full collections no longer scan it.
    assert all(line["frozen_objects"] > 100_000 for line in started), started
    jobs = [await queue_mention(queue, n) for n in (1, 2)]
    await model_calls(claude, 2)  # one job per child: each has concurrency 1
    async with httpx.AsyncClient(timeout=5) as http:
        for port in (metrics_port, metrics_port + 1):
            assert (await http.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
    service.send(signal.SIGTERM)
    assert await service.exit_code(EXIT_S) == 0
    assert [await state_of(queue, job_id) for job_id in jobs] == [JobState.COMPLETED, JobState.COMPLETED]
    drafts = [call for call in slack.calls_to("chat.postEphemeral") if "blocks" in call.params]
    assert len(drafts) == 2, "one draft per job (progress updates carry no blocks)"
    assert services.owned_pids() == []


async def test_worker_child_that_dies_is_reported_and_the_supervisor_exits_1(
    services: Services, service_env: EnvFactory, queue: Queue
) -> None:
    """SIGKILL one child of `worker --processes 2`: the supervisor logs it, drains the other and exits 1."""
    service = services.start("worker", "--processes", "2", env=service_env())
    await service.wait_log('"service started"', timeout_s=START_S, count=2)

    async def two_heartbeats() -> bool:
        return len(await queue.workers()) == 2

    await wait_until(two_heartbeats, timeout_s=START_S, every_s=0.05)
    pids = sorted(int(beat["pid"]) for beat in (await queue.workers()).values())
    os.kill(pids[0], signal.SIGKILL)
    assert await service.exit_code(EXIT_S) == 1
    log = service.log_text()
    died = [r for r in map(json.loads, log.splitlines()) if r.get("event") == "worker process died"]
    assert [r["pid"] for r in died] == [pids[0]]
    assert services.owned_pids() == [], "the surviving child was stopped too"


@pytest.fixture
async def postgres_database_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of this test's own (dropped at the end), on TEST_DATABASE_URL's server."""
    base = make_url(os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    name = f"sb_pipeline_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.render_as_string(hide_password=False))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        await admin.dispose()
        reason = f"PostgreSQL unreachable at TEST_DATABASE_URL: {type(exc).__name__}: {exc}"
        if os.environ.get("SKIP_POSTGRES") == "1":
            pytest.skip(reason)
        pytest.fail(reason)
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_serve_and_worker_processes_on_postgresql_deliver_and_audit_a_draft(
    services: Services, service_env: EnvFactory, slack: FakeSlack, queue: Queue, postgres_database_url: str
) -> None:
    """`serve` + `worker --processes 2` on PostgreSQL: a signed command is acked, drafted, delivered and audited."""
    env = service_env(DATABASE_URL=postgres_database_url)
    web = services.start("serve", env=env, port=free_port())
    workers = services.start("worker", "--processes", "2", env=env)
    await web.wait_http_ok("/readyz", timeout_s=START_S)  # Redis and the PostgreSQL database both answer
    await workers.wait_log('"service started"', timeout_s=START_S, count=2)
    assert await post_command(web, slack, "pg", "Can you review my PR?") < 3
    await wait_until(drafted(slack, "pg"), timeout_s=30, every_s=0.05)
    engine = create_engine(postgres_database_url)
    try:
        audit = AuditLog(engine)

        async def audited() -> bool:
            return [row.status for row in await audit.recent()] == ["completed"]

        await wait_until(audited, timeout_s=10, every_s=0.1)
        [row] = await audit.recent()
    finally:
        await engine.dispose()
    assert (row.workspace_id, row.user_id, row.trigger) == (TEAM, USER, "slash_command")
    assert row.output_tokens > 0
    for service in (web, workers):
        service.send(signal.SIGTERM)
    assert [await web.exit_code(EXIT_S), await workers.exit_code(EXIT_S)] == [0, 0]


async def test_cleanup_stops_the_children_of_a_killed_supervisor(
    services: Services, service_env: EnvFactory, queue: Queue
) -> None:
    """SIGKILL a `worker --processes 2` supervisor: its children run on, orphaned; the fixture's cleanup ends them."""
    service = services.start("worker", "--processes", "2", env=service_env())

    async def two_heartbeats() -> bool:
        return len(await queue.workers()) == 2

    await wait_until(two_heartbeats, timeout_s=START_S, every_s=0.05)
    children = sorted(int(beat["pid"]) for beat in (await queue.workers()).values())
    service.send(signal.SIGKILL)
    assert await service.exit_code(10) == -signal.SIGKILL
    assert set(children) <= set(services.owned_pids()), "the orphans are still running"
    services.close()
    assert services.owned_pids() == []
    assert all(gone(pid) for pid in children), "no child survived cleanup"
