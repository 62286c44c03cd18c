"""Fair and budget-aware scheduling: workspaces share starts, caps and rates hold, provider limits and quotas apply."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis.asyncio import Redis

from slack_backend.jobs import TriggerKind, queue_ai_response
from slack_backend.queue import (
    BulkJob,
    GroupSettings,
    Job,
    JobOptions,
    JobState,
    Queue,
    QueueLimits,
    RateLimit,
    Worker,
)
from tests.fakes.anthropic_server import Behaviour
from tests.support.engine import QueueFactory, finished, running, wait_until
from tests.support.measures import jain_index, max_in_window
from tests.support.pipeline import PipelineFactory
from tests.support.procs import recorded_runs, spawn_worker
from tests.support.slack_requests import TEAM, command_body, post_signed

# Status and reply layout of fetch.lua: {status, wait_ms, id1, rec1, data1, token1, ...}.
NOTHING_READY = 1


async def test_small_workspaces_start_within_4_s_behind_a_500_job_backlog(make_queue: QueueFactory) -> None:
    """A queues 500, then B and C 10 each at 10/s: all of B's and C's start within 4 s; Jain >= 0.95 meanwhile."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {"g": "A"}, JobOptions(group="A")) for _ in range(500)])
    starts: list[tuple[str, float]] = []

    async def processor(job: Job) -> None:
        starts.append((job.data["g"], time.monotonic()))

    worker = Worker(queue, processor, concurrency=5, limits=QueueLimits(rate=RateLimit(10, 1000)))
    async with running(worker, close_timeout_s=1):
        await asyncio.sleep(1.5)  # A's backlog is flowing at the limit
        queued_at = time.monotonic()
        await queue.add_bulk([BulkJob("j", {"g": g}, JobOptions(group=g)) for g in "BC" for _ in range(10)])

        async def b_and_c_started() -> bool:
            return sum(1 for g, _ in starts if g != "A") == 20

        await wait_until(b_and_c_started, timeout_s=10)
    latest = max(t for g, t in starts if g != "A") - queued_at
    during = [g for g, t in starts if queued_at <= t <= queued_at + latest]
    index = jain_index([during.count(g) for g in "ABC"])
    shares = [during.count(g) for g in "ABC"]
    print(f"\nB and C all started within {latest:.2f} s; starts A/B/C {shares}, Jain {index:.3f}")
    assert latest <= 4.0
    assert index >= 0.95
    assert (await queue.counts())[JobState.WAITING] > 400, (
        "A's backlog is still waiting: B and C did not queue behind it"
    )


async def test_group_cap_of_2_holds_across_three_processes(
    make_queue: QueueFactory, redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """A per-workspace cap of 2 is never exceeded by 3 worker processes, while the groups together use more."""
    queue = make_queue()
    await queue.add_bulk([BulkJob("j", {"ms": 80}, JobOptions(group=g)) for g in ("T1", "T2", "T3") for _ in range(12)])
    cfg = {"url": redis_url, "prefix": prefix, "concurrency": 5, "group_concurrency": 2}
    procs = [spawn_worker(cfg, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        await wait_until(lambda: finished(queue, 36), timeout_s=30, every_s=0.1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert await asyncio.to_thread(p.wait, 15) == 0
    runs = await recorded_runs(redis_client, queue)
    assert len(runs) == 36

    def peak(selected: list[dict[str, int]]) -> int:
        edges = sorted([(r["start_ms"], 1) for r in selected] + [(r["end_ms"], -1) for r in selected])
        level = best = 0
        for _, step in edges:
            level += step
            best = max(best, level)
        return best

    per_group = {g: peak([r for r in runs if r["group"] == g]) for g in ("T1", "T2", "T3")}
    print(f"\npeak running per workspace {per_group}, overall {peak(runs)}")
    assert max(per_group.values()) <= 2
    assert peak(runs) >= 4, "other workspaces used the slots one workspace could not"


async def test_group_rate_limit_holds_while_others_use_the_rest(make_queue: QueueFactory) -> None:
    """Workspace A limited to 2/s holds in every sliding second while B uses the rest of the global 10/s."""
    queue = make_queue()
    await queue.set_group("A", GroupSettings(rate=RateLimit(2, 1000)))
    await queue.add_bulk([BulkJob("j", {"g": g}, JobOptions(group=g)) for g in "AB" for _ in range(30)])

    entered: dict[str, list[float]] = {"A": [], "B": []}

    async def processor(job: Job) -> None:
        entered[job.data["g"]].append(time.monotonic() * 1000)

    worker = Worker(queue, processor, concurrency=10, limits=QueueLimits(rate=RateLimit(10, 1000)))
    async with running(worker, close_timeout_s=1):
        await asyncio.sleep(3.2)
    # At the processor, to within the hand-off lateness of a loaded machine (as in tests/test_engine_limits.py):
    # a third start of A within 960 ms, or an 11th overall, is a limit not held.
    assert max_in_window(entered["A"], 1000 - 40) <= 2
    assert max_in_window(entered["A"] + entered["B"], 1000 - 40) <= 10
    # Exactly, on the engine's clock (Redis time at each start, what the limits are kept in).
    starts: dict[str, list[float]] = {"A": [], "B": []}
    for job in await queue.get_jobs(JobState.COMPLETED):
        starts[job.data["g"]].append(float(job.processed_ms or 0))
    both = starts["A"] + starts["B"]
    print(f"\nA {len(starts['A'])} starts, B {len(starts['B'])} in 3.2 s")
    assert max_in_window(starts["A"], 1000) <= 2
    assert max_in_window(both, 1000) <= 10
    assert len(starts["B"]) >= 22, "B used what A could not"


async def test_direct_requests_go_before_passive_work_of_the_same_workspace(make_queue: QueueFactory) -> None:
    """In one workspace a slash command queued after passive thread work starts first."""
    queue = make_queue()
    base = {"workspace_id": TEAM, "user_id": "U0USER1", "channel_id": "C0CHAN1", "trigger_text": "hi"}
    await queue_ai_response(queue, {**base, "trigger": TriggerKind.THREAD, "thread_ts": "1.1"})
    await queue_ai_response(queue, {**base, "trigger": TriggerKind.REPLY, "thread_ts": "1.1"})
    await queue_ai_response(queue, {**base, "trigger": TriggerKind.SLASH_COMMAND})
    order: list[str] = []

    async def processor(job: Job) -> None:
        order.append(job.data["trigger"])

    async with running(Worker(queue, processor, concurrency=1)):
        await wait_until(lambda: finished(queue, 3))
    assert order == ["slash_command", "thread", "reply"]


async def test_spent_provider_tokens_hold_all_calls_until_reset(pipeline: PipelineFactory) -> None:
    """The model reports 0 tokens left, reset 3 s away: the fake model gets no call before the reset, then one."""
    async with pipeline() as p:
        # The reset is fixed once the pipeline runs, so a slow start cannot use up the hold before it begins.
        reset_s = time.time() + 3
        reset = datetime.fromtimestamp(reset_s, UTC).isoformat()
        spent = {"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": reset}
        p.claude.script(Behaviour.success(headers=spent))
        await post_signed(p.client, command_body(p.slack, text="first"))

        async def first_done() -> bool:
            return len(p.claude.message_requests) == 1 and (await p.queue.counts())[JobState.COMPLETED] == 1

        await wait_until(first_done)
        await post_signed(p.client, command_body(p.slack, text="second", trigger_id="1.2.second"))
        checks = 0
        # Counted where the model would see it; 0.1 s short of the reset, since that is when a call may come.
        while time.time() < reset_s - 0.1:
            assert len(p.claude.message_requests) == 1, f"a model call came {reset_s - time.time():.2f} s early"
            checks += 1
            await asyncio.sleep(0.05)
        await wait_until(lambda: _requests_seen(p.claude.message_requests, 2), timeout_s=10)
    assert checks > 0, "the hold was observed at all"


async def test_a_429_holds_every_job_of_the_queue_without_spending_attempts(pipeline: PipelineFactory) -> None:
    """A 429 with retry-after 5: no job of the queue starts for 5 s; attempts stay unchanged; both then finish."""
    async with pipeline() as p:
        p.claude.script(Behaviour.rate_limited(retry_after_s=5))
        await post_signed(p.client, command_body(p.slack, text="first"))
        await wait_until(lambda: _requests_seen(p.claude.message_requests, 1))
        limited_at = time.monotonic()

        async def held() -> bool:
            return await p.queue.hold_remaining_ms() > 0

        # The second request comes once the 429 has reached the worker and held the queue: a job that
        # started before then had been started before anyone knew of the limit.
        await wait_until(held, timeout_s=5)
        await post_signed(p.client, command_body(p.slack, text="second", trigger_id="1.2.second"))
        started: list[float] = []

        async def other_started() -> bool:
            job = await p.queue.get("1.2.second")
            if job is not None and job.processed_ms is not None and not started:
                started.append(time.monotonic())
            return bool(started)

        await wait_until(other_started, timeout_s=10, every_s=0.02)

        async def all_done() -> bool:
            return await finished(p.queue, 2)

        await wait_until(all_done, timeout_s=10)
        jobs = await p.queue.get_jobs(JobState.COMPLETED) + await p.queue.get_jobs(JobState.FAILED)
    assert started[0] - limited_at >= 4.8
    assert {j.state for j in jobs} == {JobState.COMPLETED}
    assert [j.attempts_made for j in jobs] == [1, 1]


async def test_over_quota_gets_plain_words_and_no_model_call_until_the_next_day(
    pipeline: PipelineFactory,
) -> None:
    """Over its daily quota a workspace gets a plain message and no AI call; the next day its request runs."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    clock_now = [today]
    async with pipeline(clock=lambda: clock_now[0], WORKSPACE_DAILY_TOKEN_QUOTA="1") as p:
        # The first request runs (nothing used yet) and uses more than the 1-token quota.
        await post_signed(p.client, command_body(p.slack, text="first"))
        await wait_until(lambda: finished(p.queue, 1))
        assert len(p.claude.message_requests) == 1
        await p.queue.clean(JobState.COMPLETED)
        await post_signed(p.client, command_body(p.slack, text="second", trigger_id="1.2.second"))
        await wait_until(lambda: finished(p.queue, 1))
        assert len(p.claude.message_requests) == 1, "no AI call over quota"
        notice = p.slack.response_posts["command1"][-1]
        assert "quota" in notice["text"]
        assert "resets at 00:00 UTC" in notice["text"]
        # The next day the same workspace runs again.
        clock_now[0] = today + timedelta(days=1)
        await p.queue.clean(JobState.COMPLETED)
        await post_signed(p.client, command_body(p.slack, text="third", trigger_id="1.3.third"))
        await wait_until(lambda: finished(p.queue, 1))
        assert len(p.claude.message_requests) == 2


async def _requests_seen(requests: Sequence[object], n: int) -> bool:
    return len(requests) >= n


async def _start_order(
    worker_queue: Queue, concurrency: int, limits: QueueLimits, n: int, run_s: float = 0.02
) -> list[str]:
    """Run one worker until n jobs have started; the groups of the started jobs, in start order."""
    order: list[str] = []

    async def processor(job: Job) -> None:
        order.append(job.group or "")
        await asyncio.sleep(run_s)

    async def all_started() -> bool:
        return len(order) >= n

    async with running(Worker(worker_queue, processor, concurrency=concurrency, limits=limits), close_timeout_s=5):
        await wait_until(all_started, timeout_s=30)
    return order


def _prefix_fairness(order: Sequence[str], groups: Sequence[str], step: int) -> list[float]:
    """Jain's index of the groups' start counts over each prefix of the order whose length is a multiple of step."""
    return [jain_index([list(order[:end]).count(g) for g in groups]) for end in range(step, len(order) + 1, step)]


async def test_cap_of_1_gives_six_groups_a_rotation_over_two_slots(make_queue: QueueFactory) -> None:
    """6 groups x 5 jobs, group cap 1, 2 slots: every group starts within the first 12 starts; Jain >= 0.95."""
    queue = make_queue()
    limits = QueueLimits(group_concurrency=1)
    await queue.set_limits(limits)
    await queue.add_bulk([BulkJob("j", {}, JobOptions(group=g)) for _ in range(5) for g in "abcdef"])
    order = "".join(await _start_order(queue, 2, limits, 30))
    print(f"\nstart order under a group cap of 1: {order}")
    assert set(order[:12]) == set("abcdef"), order
    # Over the run: every prefix of two rounds or more shares the starts evenly.
    assert min(_prefix_fairness(order, "abcdef", 6)[1:]) >= 0.95, order


async def test_a_capped_group_rejoins_at_its_turn_not_by_name(make_queue: QueueFactory) -> None:
    """Groups c, b, a arrive in that order, cap 1, one slot: starts rotate c b a, the order of arrival, not of names."""
    queue = make_queue()
    limits = QueueLimits(group_concurrency=1)
    await queue.set_limits(limits)
    await queue.add_bulk([BulkJob("j", {}, JobOptions(group=g)) for g in "cba" for _ in range(3)])
    order = "".join(await _start_order(queue, 1, limits, 9, run_s=0))
    assert order == "cbacbacba"


async def test_groups_held_by_their_own_rate_keep_their_place(make_queue: QueueFactory) -> None:
    """Groups c, b, a (arrived in that order) each limited to 1 start per 150 ms: every round starts c, b, a."""
    queue = make_queue()
    limits = QueueLimits(group_rate=RateLimit(1, 150))
    await queue.set_limits(limits)
    await queue.add_bulk([BulkJob("j", {}, JobOptions(group=g)) for g in "cba" for _ in range(4)])
    order = "".join(await _start_order(queue, 3, limits, 12, run_s=0))
    # Each round the three groups come off their rate limit together; the place each held decides, not names.
    assert order == "cba" * 4


async def test_workspace_cap_of_1_starves_no_workspace_by_id(make_queue: QueueFactory) -> None:
    """WORKSPACE_CONCURRENCY=1, 12 workspaces x 3 requests, 2 slots: each starts within the first 24 starts."""
    queue = make_queue()
    workspaces = [f"T{i:04d}" for i in range(12)]
    base = {"user_id": "U0USER1", "channel_id": "C0CHAN1", "trigger_text": "hi", "trigger": TriggerKind.SLASH_COMMAND}
    for _ in range(3):
        for ws in workspaces:
            await queue_ai_response(queue, {**base, "workspace_id": ws})
    limits = QueueLimits(group_concurrency=1)
    starts = await _start_order(queue, 2, limits, 36, run_s=0.01)
    first = {ws: starts.index(ws) for ws in workspaces}
    print(f"\nfirst start of each workspace: {first}")
    assert max(first.values()) < 2 * len(workspaces)
    assert min(_prefix_fairness(starts, workspaces, len(workspaces))) >= 0.95


async def test_a_fetch_past_more_blocked_groups_than_it_tries_says_look_again(make_queue: QueueFactory) -> None:
    """40 capped groups ahead of a ready one: a fetch that gives up says "look again now" (wait 0), never "idle"."""
    queue = make_queue()
    blocked = [f"g{i:02d}" for i in range(40)]
    await queue.add_bulk([BulkJob("j", {}, JobOptions(group=g)) for g in blocked for _ in range(2)])
    await queue.add_bulk([BulkJob("j", {}, JobOptions(group="zz")) for _ in range(3)])
    # One start per group, zz last: every group is then one pass on, zz behind the 40 in the fair order.
    first = await queue.call("fetch", "w1", 60_000, 41)
    assert [json.loads(first[3 + 4 * i])["group"] for i in range(41)][-1] == "zz"
    # Now the 40 are at a cap of 1 while still in the ready set; zz has a cap of its own that leaves it room.
    await queue.set_group("zz", GroupSettings(concurrency=5))
    await queue.set_limits(QueueLimits(group_concurrency=1))
    reply = await queue.call("fetch", "w1", 60_000, 1)
    if len(reply) == 2:
        status, wait_ms = int(reply[0]), int(reply[1])
        assert (status, wait_ms) == (NOTHING_READY, 0), "ready work remains: the worker must fetch again at once"
    started: list[str] = [json.loads(reply[3])["group"]] if len(reply) > 2 else []
    for _ in range(3):
        if started:
            break
        again = await queue.call("fetch", "w1", 60_000, 1)
        if len(again) > 2:
            started.append(json.loads(again[3])["group"])
    assert started == ["zz"]
