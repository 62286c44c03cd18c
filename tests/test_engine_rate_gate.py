"""The call gate (RateGate): a cross-process sliding window that a running job takes a slot of before its call."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from redis.asyncio import Redis

from slack_backend.queue import BulkJob, Job, JobState, RateGate, RateLimit, Worker, create_redis
from slack_backend.queue._scripts import _read
from tests.support.engine import QueueFactory, finished, running, wait_until
from tests.support.measures import max_in_window

# The acquirers stamp their own monotonic clock after the reply comes back: on a loaded 2-core machine one reply
# can be late by a scheduler tick or two. Windows 20 ms shorter than the limit's leave room for that, as the
# at-the-API test does.
OBSERVER_SLACK_MS = 20


class CountingGate(RateGate):
    """A gate that counts its round trips to Redis, to prove a waiter sleeps instead of polling."""

    calls = 0

    async def _call(self, token: str, mode: str, max_wait_ms: int = -1) -> tuple[bool, int]:
        self.calls += 1
        return await super()._call(token, mode, max_wait_ms)


def test_acquire_script_header_declares_its_key_and_returns() -> None:
    """acquire.lua opens with its role, the one key it is given, its ARGV and returns, and builds no key itself."""
    text = _read("acquire.lua")
    head = text.splitlines()
    assert head[0].startswith("-- acquire: ")
    for declared in ("-- KEYS[1]", "ARGV[1]", "ARGV[2]", "ARGV[3]", "ARGV[4]", "ARGV[5]", "-- Returns:"):
        assert declared in text
    assert "KEYS[2]" not in text
    assert ".. ARGV" not in text


def test_queue_call_gate_key_shares_the_queue_hash_tag(make_queue: QueueFactory) -> None:
    """A queue's call gate lives under the queue's {prefix:name} tag, so Redis Cluster keeps it in the same slot."""
    queue = make_queue("calls")
    gate = queue.call_gate(RateLimit(5, 1000))
    assert gate.key.startswith(queue.keys.tag + ":")


async def test_never_more_than_max_per_window_across_two_clients(make_queue: QueueFactory, redis_url: str) -> None:
    """8 tasks on 2 Redis clients take 40 slots at 5/500 ms: no window sees more than 5, and the rate is kept up."""
    queue = make_queue()
    limit = RateLimit(5, 500)
    other = create_redis(redis_url)
    try:
        gates = [queue.call_gate(limit), RateGate(other, queue.keys.calls(), limit)]
        stamps: list[float] = []
        total = 40
        claimed = 0

        async def acquirer(gate: RateGate) -> None:
            nonlocal claimed
            while claimed < total:
                claimed += 1
                await gate.acquire()
                stamps.append(time.monotonic() * 1000)

        await asyncio.wait_for(asyncio.gather(*(acquirer(gates[i % 2]) for i in range(8))), timeout=30)
    finally:
        await other.aclose()
    worst = max_in_window(stamps, limit.duration_ms - OBSERVER_SLACK_MS)
    span_s = (max(stamps) - min(stamps)) / 1000
    mean = (len(stamps) - limit.max) / span_s
    print(f"\ngate: {len(stamps)} acquisitions in {span_s:.2f} s, max {worst} per window, mean {mean:.2f}/s")
    assert len(stamps) == total
    assert worst <= limit.max
    # Each slot is held for the window plus the 5 ms guard band: 1% below the limit, 5% allowed.
    assert mean >= 0.95 * limit.max * 1000 / limit.duration_ms
    assert sum(g.stats.acquired for g in gates) == len(stamps)
    assert sum(g.stats.waits for g in gates) > 0


async def test_a_waiter_sleeps_exactly_until_the_slot_frees(redis_client: Redis, prefix: str) -> None:
    """At 1 per 300 ms the second acquirer gets its slot ~300 ms after the first, in 2 round trips, not a poll loop."""
    limit = RateLimit(1, 300)
    gate = CountingGate(redis_client, f"{{{prefix}}}:gate", limit)
    await gate.acquire()
    first = time.monotonic()
    await gate.acquire()
    gap_ms = (time.monotonic() - first) * 1000
    print(f"\ngate: second slot after {gap_ms:.1f} ms (window 300 ms + margin {limit.margin_ms} ms)")
    assert gap_ms >= limit.duration_ms - OBSERVER_SLACK_MS
    # Woken soon after the slot frees: the sleep is the reply's wait, not a fixed poll interval. 150 ms covers a
    # timer woken late on a loaded 2-core machine; a poll loop would miss by its interval.
    assert gap_ms <= limit.duration_ms + limit.margin_ms + 150
    # One take; then one reservation, a sleep and one confirm (again only if a reply outlasted the guard band, as
    # on a loaded host): a poll every 10 ms would have made ~30 calls.
    assert 3 <= gate.calls <= 5
    assert gate.stats.waits == 1
    assert gate.stats.wait_ms >= limit.duration_ms - OBSERVER_SLACK_MS


async def test_waiters_are_served_in_the_order_they_asked(redis_client: Redis, redis_url: str, prefix: str) -> None:
    """6 callers on 2 clients ask in turn at 1 per 80 ms: their slots come in that order, ~80 ms apart, no race."""
    limit = RateLimit(1, 80, margin_ms=0)
    other = create_redis(redis_url)
    try:
        gates = [RateGate(redis_client, f"{{{prefix}}}:gate", limit), RateGate(other, f"{{{prefix}}}:gate", limit)]
        order: list[int] = []
        done_at: list[float] = []

        async def caller(i: int) -> None:
            await gates[i % 2].acquire()
            order.append(i)
            done_at.append(time.monotonic())

        async def newest_slot() -> float:
            top = await redis_client.zrange(gates[0].key, 0, 0, desc=True, withscores=True)
            return float(top[0][1]) if top else float("-inf")

        tasks = []
        for i in range(6):
            before = await newest_slot()
            tasks.append(asyncio.create_task(caller(i)))

            async def reserved(before: float = before) -> bool:
                return await newest_slot() > before

            # Each asks after the one before has its slot: an event order, not a 5 ms sleep (on two connections
            # a loaded Redis may read two asks in one turn, in either order).
            await wait_until(reserved, timeout_s=5, every_s=0.002)
        await asyncio.gather(*tasks)
    finally:
        await other.aclose()
    assert order == list(range(6))
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(done_at)]
    assert min(gaps_ms) >= limit.duration_ms - OBSERVER_SLACK_MS


async def test_a_caller_that_goes_late_pushes_the_next_one_back(redis_client: Redis, prefix: str) -> None:
    """A reserved caller that wakes 100 ms late moves its slot: the one behind it still waits a full window after it."""
    limit = RateLimit(1, 200, margin_ms=0)
    gate = RateGate(redis_client, f"{{{prefix}}}:gate", limit)
    assert await gate.acquire()
    taken, wait_ms = await gate._call("late", "reserve")
    assert taken
    assert wait_ms > 150
    behind = asyncio.create_task(gate.acquire())
    await asyncio.sleep((wait_ms + 100) / 1000)  # the late caller's event loop was busy
    _, again = await gate._call("late", "confirm")
    late_went = time.monotonic()
    assert again == 0
    await behind
    gap_ms = (time.monotonic() - late_went) * 1000
    assert gap_ms >= limit.duration_ms - OBSERVER_SLACK_MS


async def test_max_wait_gives_up_at_once_and_takes_nothing(redis_client: Redis, prefix: str) -> None:
    """A caller that cannot wait until the next free slot is told so without sleeping, and holds no slot."""
    gate = RateGate(redis_client, f"{{{prefix}}}:gate", RateLimit(1, 2000))
    assert await gate.acquire()
    started = time.monotonic()
    assert not await gate.acquire(max_wait_s=0.5)
    # Told at once: well under the 0.5 s it would have slept (0.4 s allows for a loaded machine).
    assert time.monotonic() - started < 0.4
    assert await redis_client.zcard(gate.key) == 1


async def test_an_idle_gate_leaves_no_key(redis_client: Redis, prefix: str) -> None:
    """The stamps expire with their window: a gate nobody uses costs no Redis memory."""
    gate = RateGate(redis_client, f"{{{prefix}}}:gate", RateLimit(3, 100, margin_ms=0))
    await gate.acquire()
    assert 0 < await redis_client.pttl(gate.key) <= 100
    await asyncio.sleep(0.15)
    assert not await redis_client.exists(gate.key)


@pytest.mark.parametrize("bad", [RateLimit(1, 1), RateLimit(3, 50, margin_ms=0)])
async def test_a_full_window_never_admits_early(redis_client: Redis, prefix: str, bad: RateLimit) -> None:
    """At the edge of its window a full gate refuses: a second call inside it is told how long to wait."""
    gate = RateGate(redis_client, f"{{{prefix}}}:gate", bad)
    for _ in range(bad.max):
        assert await gate.try_acquire() == 0
    wait_ms = await gate.try_acquire()
    assert 1 <= wait_ms <= bad.duration_ms + bad.margin_ms


async def test_waiting_in_the_gate_is_not_an_attempt_and_keeps_the_lease(make_queue: QueueFactory) -> None:
    """A job that waits 1.2 s for a slot under a 300 ms lease is renewed meanwhile: no stall, one attempt."""
    queue = make_queue()
    gate = queue.call_gate(RateLimit(1, 1200, margin_ms=0))
    await gate.acquire()  # the window is now full for 1.2 s
    await queue.add_bulk([BulkJob("call", {})])
    waited: list[float] = []

    async def processor(job: Job) -> str:
        started = time.monotonic()
        await gate.acquire()
        waited.append(time.monotonic() - started)
        return "called"

    worker = Worker(queue, processor, lease_ms=300, stalled_interval_ms=100)
    async with running(worker):
        await wait_until(lambda: finished(queue, 1), timeout_s=10)
    [job] = await queue.get_jobs(JobState.COMPLETED)
    # The worker's start-up eats into the 1.2 s; what matters is that the wait outlasted the lease twice over.
    assert waited[0] >= 2 * worker.lease_ms / 1000
    assert job.attempts_made == 1
    assert job.stalls == 0
    assert job.starts == 1
