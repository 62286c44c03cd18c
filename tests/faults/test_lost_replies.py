"""A lost reply changes nothing: each state change whose reply the network lost is sent again (by redis-py's retry
or the worker's), and the repeat has the effect and the answer of one call. Faults come from a TCP proxy that lets
the server run the command and resets the client's connection instead of passing the reply."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slack_backend.queue import Job, JobEvent, JobState, Queue, RedisTarget, RetryAfter, Worker, create_redis
from slack_backend.queue._scripts import SCRIPT_NAMES, script_source
from tests.support.engine import grown_past, job_in_state, running, wait_until
from tests.support.fault_proxy import Command, FaultProxy, evalsha_of
from tests.support.redis_server import RedisServer
from tests.support.sentinel_cluster import failover_under_load


def sha(script: str) -> str:
    return hashlib.sha1(script_source(script).encode()).hexdigest()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[FaultProxy]:
    p = FaultProxy("127.0.0.1", redis_server.port)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def queue(proxy: FaultProxy, prefix: str) -> AsyncIterator[Queue]:
    client = create_redis(proxy.url)
    # Loaded beforehand, so the reply lost is the script's own and not a NOSCRIPT answer to its first send.
    for name in SCRIPT_NAMES:
        await client.script_load(script_source(name))
    yield Queue("q", connection=client, prefix=prefix)
    await client.aclose()


class Recorder:
    """Every hook call a worker makes, by event name."""

    def __init__(self, worker: Worker) -> None:
        self.events: dict[str, list[JobEvent]] = {}
        for name in ("completed", "failed", "retrying", "released", "error", "stalled"):
            worker.on(name, self._hook(name))  # type: ignore[arg-type]

    def _hook(self, name: str) -> object:
        def record(event: JobEvent) -> None:
            self.events.setdefault(name, []).append(event)

        return record

    def count(self, name: str) -> int:
        return len(self.events.get(name, []))


async def test_a_lost_complete_reply_completes_once_and_fires_completed_once(proxy: FaultProxy, queue: Queue) -> None:
    """complete ran, its reply was lost, it was sent again: one completion, the completed hook once, no lease error."""
    proxy.lose_reply(evalsha_of(sha("complete")))
    runs: list[int] = []

    async def process(job: Job) -> str:
        runs.append(job.starts)
        return "done"

    worker = Worker(queue, process)
    seen = Recorder(worker)
    async with running(worker):
        await queue.add("x", {}, job_id="c1")
        await wait_until(job_in_state(queue, "c1", JobState.COMPLETED))
        await asyncio.sleep(0.2)
    assert len(proxy.lost) == 1
    assert runs == [1]
    assert (seen.count("completed"), seen.count("error")) == (1, 0)
    job = await queue.get("c1")
    assert job is not None
    assert (job.result, job.attempts_made) == ("done", 1)


async def test_a_lost_final_fail_reply_still_fires_failed_once(proxy: FaultProxy, queue: Queue) -> None:
    """A final fail whose reply was lost: failed once, the hook (which tells the user) fires once, final."""
    proxy.lose_reply(evalsha_of(sha("fail")))

    async def process(job: Job) -> None:
        raise ValueError("upstream said no")

    worker = Worker(queue, process)
    seen = Recorder(worker)
    async with running(worker):
        await queue.add("x", {}, job_id="f1", attempts=1)
        await wait_until(job_in_state(queue, "f1", JobState.FAILED))
        await asyncio.sleep(0.2)
    assert len(proxy.lost) == 1
    assert (seen.count("failed"), seen.count("error")) == (1, 0)
    assert seen.events["failed"][0].final
    job = await queue.get("f1")
    assert job is not None
    assert job.attempts_made == 1


async def test_a_lost_retrying_fail_reply_spends_one_attempt(proxy: FaultProxy, queue: Queue) -> None:
    """A fail that schedules a retry, re-sent: one attempt spent, one retrying hook, the retry runs and completes."""
    proxy.lose_reply(evalsha_of(sha("fail")))
    runs: list[int] = []

    async def process(job: Job) -> str:
        runs.append(job.attempts_made)
        if job.attempts_made == 0:
            raise ValueError("first try fails")
        return "ok"

    worker = Worker(queue, process, backoff_strategy=lambda _n, _e: 0)
    seen = Recorder(worker)
    async with running(worker):
        await queue.add("x", {}, job_id="r1", attempts=3)
        await wait_until(job_in_state(queue, "r1", JobState.COMPLETED))
    assert runs == [0, 1]
    assert (seen.count("retrying"), seen.count("error")) == (1, 0)
    job = await queue.get("r1")
    assert job is not None
    assert job.attempts_made == 2


async def test_a_lost_release_reply_releases_once(proxy: FaultProxy, queue: Queue) -> None:
    """RetryAfter's release, re-sent: released once, the job runs once more, nothing stalls."""
    proxy.lose_reply(evalsha_of(sha("release")))
    starts: list[int] = []

    async def process(job: Job) -> str:
        starts.append(job.starts)
        if job.starts == 1:
            raise RetryAfter(0.05)
        return "ok"

    worker = Worker(queue, process)
    seen = Recorder(worker)
    async with running(worker):
        await queue.add("x", {}, job_id="l1")
        await wait_until(job_in_state(queue, "l1", JobState.COMPLETED))
    assert starts == [1, 2]
    assert (seen.count("released"), seen.count("error")) == (1, 0)
    job = await queue.get("l1")
    assert job is not None
    assert (job.attempts_made, job.stalls) == (1, 0)


async def test_a_lost_fetch_reply_leases_no_job_that_nobody_runs(proxy: FaultProxy, queue: Queue) -> None:
    """Fetches whose replies were lost are answered again with the same jobs: every job starts once, none stalls."""
    proxy.lose_reply(evalsha_of(sha("fetch")), times=2)
    for i in range(6):
        await queue.add("x", {}, job_id=f"j{i}")
    starts: list[str] = []

    async def process(job: Job) -> None:
        starts.append(job.id)

    # A short lease and check: a job leased to nobody would be recovered (a stall) well within the wait below.
    worker = Worker(queue, process, concurrency=2, lease_ms=500, stalled_interval_ms=100)
    async with running(worker):
        await wait_until(lambda: _all_completed(queue, 6))
        await asyncio.sleep(1.0)
    assert len(proxy.lost) == 2
    assert sorted(starts) == [f"j{i}" for i in range(6)]
    jobs = await queue.get_jobs(JobState.COMPLETED)
    assert [(j.starts, j.stalls) for j in jobs] == [(1, 0)] * 6


async def test_a_lost_reply_on_the_second_lane_starts_its_jobs_once(proxy: FaultProxy, queue: Queue) -> None:
    """The reply of a `complete` that also fetched on lane 1 is lost: the re-send gets lane 1's jobs back even
    though lane 0 fetched meanwhile, so every job starts once and none is left leased to nobody, and every job
    fires `completed` once (none "not found", though retention trims while the re-send is on its way)."""
    complete = evalsha_of(sha("complete"))

    def lane_1_fetch(command: Command) -> bool:
        # ARGV[7] of complete is the fetch's request id; lane 1's begins "1:".
        return complete(command) and command[3 + int(command[2]) + 6].startswith(b"1:")

    proxy.lose_reply(lane_1_fetch)
    for i in range(200):
        await queue.add("x", {}, job_id=f"j{i}")
    starts: list[str] = []

    async def process(job: Job) -> None:
        starts.append(job.id)

    # Default retention (100 kept): the other lane goes on completing while the lost call is re-sent, so the jobs
    # it completed may be trimmed before the re-send lands; it still answers as the first run did.
    worker = Worker(queue, process, concurrency=4, lease_ms=500, stalled_interval_ms=100)
    seen = Recorder(worker)
    async with running(worker):
        await wait_until(grown_past(starts, 199))
        await wait_until(lambda: _all_done(queue))
        await asyncio.sleep(1.0)
    assert len(proxy.lost) == 1
    assert sorted(starts) == sorted(f"j{i}" for i in range(200))
    assert (seen.count("completed"), seen.count("error"), seen.count("stalled")) == (200, 0, 0)


async def _all_done(queue: Queue) -> bool:
    counts = await queue.counts()
    return counts[JobState.ACTIVE] == counts[JobState.WAITING] == 0


async def _all_completed(queue: Queue, n: int) -> bool:
    return (await queue.counts())[JobState.COMPLETED] == n


async def test_a_lost_add_reply_makes_one_job_even_without_an_id(proxy: FaultProxy, queue: Queue) -> None:
    """add without a job id, its reply lost and re-sent: one job, not two (the client chose the id first)."""
    proxy.lose_reply(evalsha_of(sha("add")))
    added = await queue.add("x", {"n": 1})
    assert len(proxy.lost) == 1
    assert added.job_id.isdigit()
    counts = await queue.counts()
    assert counts[JobState.WAITING] == 1
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.data == {"n": 1}


async def test_a_stale_fetch_arriving_after_a_newer_one_starts_nothing(queue: Queue) -> None:
    """A fetch its worker gave up on (redis-py still retrying it) that lands after the worker's newer fetch leases
    nothing: otherwise its jobs would sit leased to nobody until the stall check."""
    await queue.add("x", {}, job_id="first")
    newer = list(await queue.call("fetch", "w1", 5000, 1, f"{2:016d}"))
    assert newer[2::4] == ["first"]
    await queue.add("x", {}, job_id="second")
    stale = list(await queue.call("fetch", "w1", 5000, 1, f"{1:016d}"))
    assert stale == [1, -1]
    second = await queue.get("second")
    assert second is not None
    assert second.state is JobState.WAITING
    # A newer request starts it as usual; the same newer one re-sent gets the same job back.
    after = list(await queue.call("fetch", "w1", 5000, 1, f"{3:016d}"))
    assert after[2::4] == ["second"]
    assert list(await queue.call("fetch", "w1", 5000, 1, f"{3:016d}"))[2::4] == ["second"]


# State-changing scripts whose replies the load test loses: adds, fetches, completions, renewals, releases.
CHANGING = ("add", "fetch", "complete", "extend", "release", "fail")


class EveryNth:
    """Matches every `n`th EVALSHA of a state-changing script (counted over all connections)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.shas = {sha(name).encode() for name in CHANGING}

    def __call__(self, command: Command) -> bool:
        if len(command) < 2 or command[0].upper() != b"EVALSHA" or command[1] not in self.shas:
            return False
        self.seen += 1
        return self.seen % self.n == 0


@pytest.mark.slow
async def test_lost_replies_under_load_lose_nothing_and_run_nothing_twice_at_once(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    """Every 25th state-changing script's reply lost (its connection reset) while two worker processes and a
    producer go through the proxy: no acknowledged job lost, none run twice at once, none left leased to nobody
    (the stall check recovers nothing), no process restarted."""
    rate = int(os.environ.get("FAILOVER_ADDS_PER_S", "200"))
    figures = await failover_under_load(
        label="lost replies, every 25th state change",
        target=RedisTarget(url=proxy.url),
        worker_cfg={"url": proxy.url, "concurrency": 20, "job_ms": 2, "lease_ms": 3000, "stalled_ms": 1000},
        workdir=tmp_path,
        fault=lambda: proxy.lose_reply(EveryNth(25), times=10**9),
        rate_per_s=rate,
        duration_s=10.0,
        fault_at_s=1.0,
        drain_s=20.0,
    )
    print(f"{figures.line()}; replies lost {len(proxy.lost)}")
    assert len(proxy.lost) > 10, "the fault was hardly exercised"
    assert figures.lost == 0
    assert figures.run_twice_at_once == 0
    assert figures.stalls_recovered == 0, "a lost reply left a job leased to nobody"
    assert figures.restarted == 0
