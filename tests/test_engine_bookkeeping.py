"""The worker's bookkeeping around the scripts: runs tracked by lease, hooks once per final state, loops that stop
and survive, shutdown that leaves nothing active, and waits ended by the event that ends them."""

from __future__ import annotations

import asyncio
import json
import random
import time

from redis.asyncio import Redis

from slack_backend.queue import (
    Job,
    JobEvent,
    JobState,
    QueueLimits,
    RetryAfter,
    TokenBudget,
    Worker,
)
from slack_backend.queue.errors import StalledError
from tests.support.engine import QueueFactory, job_in_state, running, wait_until


async def test_a_rerun_while_the_old_run_is_alive_is_tracked_by_its_own_lease(make_queue: QueueFactory) -> None:
    """RetryAfter(0) plus a slow `released` hook: the second run stays tracked, renewed and completes once."""
    queue = make_queue()
    starts: list[int] = []
    running_during_second: list[int] = []

    async def process(job: Job) -> str:
        starts.append(job.starts)
        if job.starts == 1:
            raise RetryAfter(0)
        await asyncio.sleep(0.3)  # the first run's hook is still sleeping now
        running_during_second.append(worker.running_count)
        await asyncio.sleep(2.2)  # longer than two leases: only renewal keeps it
        return "ok"

    async def slow_hook(_event: JobEvent) -> None:
        await asyncio.sleep(0.6)

    worker = Worker(queue, process, concurrency=2, lease_ms=1000, stalled_interval_ms=200)
    worker.on("released", slow_hook)
    errors: list[str] = []
    worker.on("error", lambda e: errors.append(type(e.error).__name__))
    async with running(worker):
        await queue.add("x", {}, job_id="j1")
        await wait_until(job_in_state(queue, "j1", JobState.COMPLETED), timeout_s=10)
    job = await queue.get("j1")
    assert job is not None
    assert (job.state, job.starts, job.stalls) == (JobState.COMPLETED, 2, 0)
    assert starts == [1, 2]
    assert running_during_second
    assert running_during_second[0] >= 1
    assert errors == []


async def test_a_job_failed_by_the_stall_limit_fires_failed_once_with_its_data(make_queue: QueueFactory) -> None:
    """A job whose owner vanished and that stalled past max_stalls reaches the `failed` hook once, with its data."""
    queue = make_queue()
    await queue.add("x", {"user": "U1"}, job_id="s1")
    # A worker that takes the job and dies: nobody renews this lease.
    await queue.call("fetch", "gone-worker", 200, 1)
    failed: list[JobEvent] = []
    stalled: list[JobEvent] = []
    workers = [Worker(queue, _never_called, lease_ms=1000, stalled_interval_ms=50, max_stalls=0) for _ in range(3)]
    for worker in workers:
        worker.on("failed", failed.append)
        worker.on("stalled", stalled.append)
    async with running(workers[0]), running(workers[1]), running(workers[2]):
        await wait_until(job_in_state(queue, "s1", JobState.FAILED), timeout_s=5)
        await asyncio.sleep(0.3)  # every checker ran again meanwhile
    assert len(failed) == 1, failed
    event = failed[0]
    assert event.final is True
    assert event.job is not None
    assert event.job.id == "s1"
    assert event.job.data == {"user": "U1"}
    assert isinstance(event.error, StalledError)
    assert [e.job_id for e in stalled] == ["s1"]


async def _never_called(job: Job) -> None:
    raise AssertionError(f"job {job.id} should never run here")


async def test_a_fetched_record_the_worker_cannot_read_fails_that_job_and_nothing_else(
    make_queue: QueueFactory, redis_client: Redis
) -> None:
    """A hand-edited record (unknown state) fails at once with the reason; the other jobs run; the worker lives."""
    queue = make_queue()
    await queue.add("bad", {}, job_id="bad")
    raw = await redis_client.hget(queue.keys.key("jobs"), "bad")
    assert raw is not None
    record = json.loads(raw)
    record["priority"] = "high"  # valid JSON for the scripts, but a priority the client cannot read
    await redis_client.hset(queue.keys.key("jobs"), "bad", json.dumps(record))
    for i in range(5):
        await queue.add("good", {}, job_id=f"g{i}")

    async def process(job: Job) -> str:
        return "ok"

    worker = Worker(queue, process, concurrency=2)
    async with running(worker):
        await wait_until(job_in_state(queue, "g4", JobState.COMPLETED))
        await wait_until(lambda: _state_in_redis(redis_client, queue.keys.key("failed"), "bad"))
        # The worker still takes work after the bad record.
        await queue.add("good", {}, job_id="after")
        await wait_until(job_in_state(queue, "after", JobState.COMPLETED))
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 6
    assert counts[JobState.FAILED] == 1
    assert counts[JobState.ACTIVE] == 0


async def _state_in_redis(client: Redis, key: str, member: str) -> bool:
    return await client.zscore(key, member) is not None


class _CrashingHeartbeat(Worker):
    """A worker whose heartbeat raises a non-Redis error the first few times (a bug in a background loop)."""

    crashes_left = 2

    async def _heartbeat(self) -> None:
        if self.crashes_left > 0 and self._loop_task is not None and self.stats.started > 0:
            self.crashes_left -= 1
            raise RuntimeError("bug in the lease loop")
        await super()._heartbeat()


async def test_a_background_loop_that_raises_is_restarted_and_leases_are_still_renewed(
    make_queue: QueueFactory,
) -> None:
    """The lease loop crashes twice mid-job; it restarts, keeps renewing, and the long job completes unstalled."""
    queue = make_queue()

    async def process(job: Job) -> str:
        await asyncio.sleep(6.5)  # over two leases long
        return "ok"

    # A 3 s lease, renewed every 1 s: the two crashes and restarts (0.15 s, plus two tracebacks logged) fit inside
    # it with 1.8 s to spare. At 1 s, and then at 1.5 s, a busy run let the lease lapse (stalls == 1): on a host
    # stealing CPU, the renewal after the restarts came more than 0.85 s late.
    worker = _CrashingHeartbeat(queue, process, lease_ms=3000, stalled_interval_ms=100)
    async with running(worker):
        await queue.add("long", {}, job_id="long")
        await wait_until(job_in_state(queue, "long", JobState.COMPLETED), timeout_s=15)
    job = await queue.get("long")
    assert job is not None
    assert job.stalls == 0
    assert job.starts == 1
    assert worker.crashes_left == 0
    assert worker.stats.loop_restarts >= 2


async def test_close_never_depends_on_a_cancel_landing(make_queue: QueueFactory) -> None:
    """Sixty start/close cycles with busy housekeeping: every close returns promptly, none waits on a lost cancel."""
    queue = make_queue()

    async def process(job: Job) -> None:
        return None

    slow: list[float] = []
    for _ in range(60):
        # Short lease and check period: the loops are in a Redis call much of the time, where 3.11 loses cancels.
        worker = Worker(queue, process, lease_ms=100, stalled_interval_ms=1)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(random.uniform(0.02, 0.08))
        started = time.monotonic()
        await worker.close(1)
        await task
        took = time.monotonic() - started
        # A lost cancel used to cost a 2 s wait before the loop was cancelled again; 1.5 s is far above a normal close.
        if took > 1.5:
            slow.append(took)
    assert slow == []


async def test_a_cancel_during_the_active_hook_releases_the_job(make_queue: QueueFactory) -> None:
    """Shutdown while the `active` hook still runs: the job goes back to waiting, attempts unchanged, none active."""
    queue = make_queue()

    async def slow_active(_event: JobEvent) -> None:
        await asyncio.sleep(30)

    async def process(job: Job) -> None:
        return None

    worker = Worker(queue, process)
    worker.on("active", slow_active)
    task = asyncio.create_task(worker.run())
    await queue.add("x", {}, job_id="a1")
    await wait_until(job_in_state(queue, "a1", JobState.ACTIVE))
    await worker.close(0.2)
    await task
    job = await queue.get("a1")
    assert job is not None
    assert job.state is JobState.WAITING
    assert job.attempts_made == 0
    assert (await queue.counts())[JobState.ACTIVE] == 0


async def test_de_duplication_outlives_retention(make_queue: QueueFactory) -> None:
    """An id seen a while ago is still refused after its finished record was trimmed away by retention."""
    queue = make_queue()

    async def process(job: Job) -> None:
        return None

    from slack_backend.queue.worker import KeepJobs

    worker = Worker(queue, process, keep_completed=KeepJobs(count=1))
    async with running(worker):
        assert (await queue.add("x", {}, job_id="event-1")).created
        await wait_until(job_in_state(queue, "event-1", JobState.COMPLETED))
        for i in range(3):
            await queue.add("x", {}, job_id=f"other-{i}")

        # Any later completion trims it. (Waiting for the last added job instead raced: the worker's two lanes
        # may complete jobs out of the order they were added, and the last one completed is the one kept.)
        async def trimmed() -> bool:
            return await queue.get("event-1") is None

        await wait_until(trimmed)
        again = await queue.add("x", {}, job_id="event-1")
    assert again.created is False


async def test_de_duplication_ends_after_its_ttl(make_queue: QueueFactory, redis_client: Redis, prefix: str) -> None:
    """With a short de-duplication TTL, the same id is accepted again once the TTL and the record are gone."""
    from slack_backend.queue import Queue

    queue = Queue("q", connection=redis_client, prefix=prefix, dedup_ttl_ms=200)
    assert (await queue.add("x", {}, job_id="e")).created
    await queue.remove("e")
    assert (await queue.add("x", {}, job_id="e")).created  # an operator's remove frees the id
    await queue.remove("e")
    await redis_client.zadd(queue.keys.key("dedup"), {"e": 1})  # as if seen long ago
    assert (await queue.add("x", {}, job_id="e")).created


async def test_a_slot_freed_under_the_global_cap_wakes_an_idle_worker(make_queue: QueueFactory) -> None:
    """Global cap 1, two workers: the waiting job starts right after the running one ends, without polling."""
    queue = make_queue()
    ended: dict[str, float] = {}
    began: dict[str, float] = {}
    fetches_at_start: dict[str, int] = {}

    async def process(job: Job) -> None:
        began[job.id] = time.monotonic()
        fetches_at_start[job.id] = a.stats.fetches + b.stats.fetches
        await asyncio.sleep(1.5 if job.id == "first" else 0.01)
        ended[job.id] = time.monotonic()

    limits = QueueLimits(global_concurrency=1)
    a = Worker(queue, process, limits=limits)
    b = Worker(queue, process, limits=limits)
    async with running(a), running(b):
        await asyncio.sleep(0.3)  # both workers configured and idle
        await queue.add("x", {}, job_id="first")
        await wait_until(job_in_state(queue, "first", JobState.ACTIVE))
        await queue.add("x", {}, job_id="second")
        fetches_before = a.stats.fetches + b.stats.fetches
        await wait_until(job_in_state(queue, "second", JobState.COMPLETED))
    fetches_while_capped = fetches_at_start["second"] - fetches_before
    # Polling every 250 ms over the 1.5 s job made 6 fetches per idle worker; woken, the workers fetch once when
    # `second` is added (and find the cap full) and once when `first` frees its slot.
    assert fetches_while_capped <= 4, fetches_while_capped
    # Woken by the freed slot, not by the idle block (5 s): 1 s is room for a loaded 2-core machine.
    assert began["second"] - ended["first"] < 1.0


async def test_a_budget_settlement_wakes_a_budget_blocked_worker(make_queue: QueueFactory) -> None:
    """A job that used less than its estimate frees budget at once: the next job starts then, not a window later."""
    queue = make_queue()
    began: dict[str, float] = {}

    async def process(job: Job) -> None:
        began[job.id] = time.monotonic()
        await asyncio.sleep(0.2)
        job.cost_used = 10

    worker = Worker(queue, process, limits=QueueLimits(budget=TokenBudget(tokens=100, window_ms=60_000)))
    async with running(worker):
        await queue.add("x", {}, job_id="one", cost=100)
        await queue.add("x", {}, job_id="two", cost=80)
        await wait_until(job_in_state(queue, "two", JobState.COMPLETED), timeout_s=10)
    # At once, not when the 60 s window frees the budget: 1.5 s is the 0.2 s job plus room for a loaded machine.
    assert began["two"] - began["one"] < 1.5


async def test_retry_after_has_a_bound_on_the_total_hold(make_queue: QueueFactory) -> None:
    """A processor that always says RetryAfter fails once its holds pass the bound, with that reason."""
    queue = make_queue()
    runs: list[int] = []

    async def process(job: Job) -> None:
        runs.append(job.starts)
        raise RetryAfter(0.1)

    worker = Worker(queue, process, max_retry_after_ms=2500)
    failed: list[JobEvent] = []
    worker.on("failed", failed.append)
    async with running(worker):
        await queue.add("x", {}, job_id="r")
        await wait_until(job_in_state(queue, "r", JobState.FAILED), timeout_s=10)
    job = await queue.get("r")
    assert job is not None
    assert job.failed_reason is not None
    assert "RetryAfter" in job.failed_reason
    # Each RetryAfter counts at least one second: 2 holds fit in 2.5 s, the third run fails.
    assert runs == [1, 2, 3]
    assert len(failed) == 1
    assert failed[0].final
