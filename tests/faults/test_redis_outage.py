"""Redis outages: Redis away for 10 s; workers ride it out, ingress answers Slack sensibly, work resumes at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import BulkJob, Job, JobEvent, JobState, Queue, Worker, create_redis
from slack_backend.web.ingress import ACK_TEXT, TRY_AGAIN_TEXT
from tests.fakes.slack_server import FakeSlack
from tests.support.engine import running, wait_until
from tests.support.fleet import FleetFactory, ServerFactory, now_ms, served_app
from tests.support.redis_server import RedisServer
from tests.support.slack_requests import BOT_TOKEN, EVENT_ID, SECRET, command_body, mention_body, post_signed

OUTAGE_S = 10.0
RESUME_WITHIN_S = 5.0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_redis_away_ten_seconds_workers_survive_ingress_degrades_and_work_resumes(
    aof_redis: ServerFactory, fleet: FleetFactory, slack: FakeSlack, prefix: str, tmp_path: Path
) -> None:
    """Redis stopped 10 s: no worker exits, events get 5xx and commands "try again", a new job runs within 5 s."""
    server = aof_redis()
    client = create_redis(server.url)
    queue = Queue("q", connection=client, prefix=prefix)
    settings = load_settings(
        {
            "REDIS_URL": server.url,
            "REDIS_PREFIX": prefix,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_API_URL": slack.base_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        }
    )
    workers = fleet(url=server.url, prefix=prefix, concurrency=5, lease_ms=2000, stalled_ms=500, max_stalls=100)
    procs = [workers.spawn(), workers.spawn()]
    try:
        async with served_app(settings, quiet=True) as web:
            await workers.wait_ready(queue, procs)
            # Work in flight when Redis goes: ten 1.5 s runs and ten waiting.
            added = await queue.add_bulk([BulkJob("work", {"ms": 1500}) for _ in range(20)])

            async def busy() -> bool:
                return (await queue.counts())[JobState.ACTIVE] == 10

            await wait_until(busy, timeout_s=20, every_s=0.02)
            await asyncio.to_thread(server.stop)
            down = time.monotonic()
            event_statuses: list[int] = []
            command_texts: list[str] = []
            answer_ms: list[int] = []
            ready_statuses: list[int] = []
            exited = 0
            while time.monotonic() - down < OUTAGE_S:
                started = time.monotonic()
                event_statuses.append((await post_signed(web, mention_body())).status_code)
                answered = time.monotonic()
                command = await post_signed(web, command_body(slack))
                answer_ms += [int((answered - started) * 1000), int((time.monotonic() - answered) * 1000)]
                command_texts.append(str(command.json()["text"]) if command.status_code == 200 else "")
                ready_statuses.append((await web.get("/readyz")).status_code)
                exited += sum(1 for p in procs if p.poll() is not None)
                # One round a second for the length of the outage (the scenario's clock, not a wait for a condition).
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
            await asyncio.to_thread(server.start)
            up_ms = now_ms()
            outage_s = time.monotonic() - down
            while True:
                try:
                    # Most urgent, so it measures how soon workers fetch again, not the backlog ahead of it.
                    probe = await queue.add("work", {"ms": 1}, job_id="probe-after-outage", priority=1)
                    break
                except RedisError:
                    await asyncio.sleep(0.02)

            async def probe_done() -> bool:
                job = await queue.get(probe.job_id)
                return job is not None and job.state is JobState.COMPLETED

            await wait_until(probe_done, timeout_s=RESUME_WITHIN_S + 5, every_s=0.02)
            probe_job = await queue.get(probe.job_id)
            assert probe_job is not None
            assert probe_job.finished_ms is not None
            assert probe_job.processed_ms is not None
            resumed_ms = probe_job.finished_ms - up_ms
            started_ms = probe_job.processed_ms - up_ms
            event_after = await post_signed(web, mention_body(), headers={"X-Slack-Retry-Num": "1"})
            command_after = await post_signed(web, command_body(slack))
            ready_after = (await web.get("/readyz")).status_code
            ids = {a.job_id for a in added}

            async def all_done() -> bool:
                return ids <= set(await queue.job_ids(JobState.COMPLETED))

            await wait_until(all_done, timeout_s=30, every_s=0.1)
            jobs = await queue.get_many(sorted(ids))
            ingress_jobs = await ai_responses_queue(client, settings).job_ids(JobState.WAITING)
            alive_after = sum(1 for p in procs if p.poll() is None)
            codes = await workers.terminate(procs)
    finally:
        await client.aclose()
    print(
        f"\nredis outage: {outage_s:.1f} s; worker processes alive {alive_after}/{len(procs)}, exits seen {exited}; "
        f"events answered {sorted(set(event_statuses))}, commands 'try again' {command_texts.count(TRY_AGAIN_TEXT)}"
        f"/{len(command_texts)}, /readyz {sorted(set(ready_statuses))}, slowest answer {max(answer_ms)} ms; "
        f"a job added after Redis returned started {started_ms} ms and finished {resumed_ms} ms later; "
        f"the 20 in flight or waiting: "
        f"{sum(1 for j in jobs if j.state is JobState.COMPLETED)} completed, {sum(j.stalls for j in jobs)} reruns; "
        f"after: event {event_after.status_code}, command {command_after.status_code}, /readyz {ready_after}"
    )
    assert exited == 0
    assert alive_after == len(procs)
    assert codes == [0] * len(procs)
    assert len(event_statuses) >= 5
    assert all(500 <= s < 600 for s in event_statuses), "Slack re-delivers events it got a 5xx for"
    assert command_texts == [TRY_AGAIN_TEXT] * len(command_texts)
    assert all(s == 503 for s in ready_statuses)
    assert max(answer_ms) < 3000, "Slack's 3 s ack deadline holds even with Redis away"
    assert resumed_ms < RESUME_WITHIN_S * 1000
    assert all(j.state is JobState.COMPLETED for j in jobs)
    assert event_after.status_code == 200
    assert command_after.json()["text"] == ACK_TEXT
    assert ready_after == 200
    assert EVENT_ID in ingress_jobs


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_an_idle_worker_picks_up_new_work_within_a_second_of_redis_returning(tmp_path: Path) -> None:
    """Redis back after an outage: a job added then completes within 1 s on the idle worker (contract 6: it wakes)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    client = create_redis(server.url)
    queue = Queue("q", connection=client, prefix="wake")
    failures = 0
    backed_off = asyncio.Event()

    def on_error(event: JobEvent) -> None:
        nonlocal failures
        failures += 1
        # Redis returns the moment the sixth failure's backoff begins. That backoff is capped at 0.5 s
        # (ConnectionWatch cap_s), so the 1 s bound below holds with or without the wake-up on reconnect: this test
        # pins "back to work within a second", not the wake-up itself.
        if failures == 6:
            backed_off.set()

    async def processor(job: Job) -> str:
        return "ok"

    # Long lease and stall interval: while Redis is away only the idle worker's wait for work touches it.
    worker = Worker(queue, processor, lease_ms=60_000, stalled_interval_ms=60_000, idle_block_s=60)
    worker.on("error", on_error)
    try:
        with capture_logs():  # the worker logs the outage; the figure is printed below
            async with running(worker):
                await wait_until(lambda: _reported(queue, worker.id), timeout_s=10)
                await asyncio.to_thread(server.stop)
                await asyncio.wait_for(backed_off.wait(), timeout=30)
                await asyncio.to_thread(server.start)
                back = time.monotonic()
                added = await queue.add("j", {})

                async def done() -> bool:
                    job = await queue.get(added.job_id)
                    return job is not None and job.state is JobState.COMPLETED

                await wait_until(done, timeout_s=10)
                waited_s = time.monotonic() - back
                print(f"\nidle worker after an outage: a job added as Redis returned completed after {waited_s:.2f} s")
                # 1 s: twice the 0.5 s backoff cap, for a busy machine; the documented figure is 0.36-0.57 s.
                assert waited_s < 1.0
    finally:
        await client.aclose()
        server.stop()


async def _reported(queue: Queue, worker_id: str) -> bool:
    return worker_id in await queue.workers()
