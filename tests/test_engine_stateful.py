"""The engine as a state machine: hypothesis drives the real scripts on a real redis-server beside a reference model."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar, cast

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from slack_backend.queue import (
    BulkJob,
    GroupSettings,
    JobNotFoundError,
    JobOptions,
    JobState,
    JobStateError,
    Queue,
    QueueLimits,
    create_redis,
)
from slack_backend.queue.job import DEFAULT_PRIORITY
from tests.support.engine_model import (
    ACTIVE,
    COMPLETED,
    DELAYED,
    FAILED,
    STATES,
    WAITING,
    GroupConf,
    MJob,
    Model,
)

T = TypeVar("T")

GROUPS = ("", "a", "b", "c")
KEEP = 3  # completed and failed jobs kept: small, so retention trims within a run
MAX_STALLS = 1
LONG_MS = 3_600_000  # a delay or lease that outlives any run of the machine
SHORT_MS = 1  # a delay that is due by the next step (the rule sleeps past it)
MAX_EVENTS = 1_000_000  # the stream is never trimmed within a run, so every final state's event is there
WORKER = "w1"
DELAY_KINDS = ("now", "short", "long")
PICK = st.integers(min_value=0, max_value=10_000)


def _delay_ms(kind: str) -> int:
    return {"now": 0, "short": SHORT_MS, "long": LONG_MS}[kind]


class EngineMachine(RuleBasedStateMachine):
    """Each rule is one script call through `Queue` or its script layer; every step is checked against the model."""

    redis_url: ClassVar[str] = ""
    loop: ClassVar[asyncio.AbstractEventLoop]
    client: ClassVar[Redis]
    sync: ClassVar[redis.Redis]

    def __init__(self) -> None:
        super().__init__()
        self.queue = Queue("sm", connection=self.client, prefix=f"sm{uuid.uuid4().hex[:10]}", max_events=MAX_EVENTS)
        self.model = Model()
        self.tokens: set[str] = set()
        self.runs: list[tuple[str, str]] = []  # every (job id, token) granted, for finishes by a lost lease
        self.ever_ids: set[str] = set()
        self.events_seen = "0-0"
        self.completed_events: dict[str, int] = {}
        self.failed_events: dict[str, int] = {}

    # -- plumbing -----------------------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, script: str, *args: str | int | float) -> Any:
        return self.run(self.queue.call(script, *args))

    def key(self, name: str) -> str:
        return self.queue.keys.key(name)

    def record(self, job_id: str) -> dict[str, Any] | None:
        raw = self.sync.hget(self.key("jobs"), job_id)
        return None if raw is None else dict(json.loads(raw))

    def pick(self, jobs: list[MJob], pick: int) -> MJob:
        # By seq, not id: ids the client chooses are random, the queue's seq replays the same, so a failure does too.
        ordered = sorted(jobs, key=lambda j: j.seq)
        return ordered[pick % len(ordered)]

    def teardown(self) -> None:
        self.run(self.queue.obliterate())

    # -- rules ----------------------------------------------------------------------------------------------

    @initialize(
        group_cap=st.sampled_from([0, 1, 2]),
        global_cap=st.sampled_from([0, 0, 3]),
        weight_a=st.sampled_from([1.0, 2.0]),
    )
    def configure(self, group_cap: int, global_cap: int, weight_a: float) -> None:
        limits = QueueLimits(group_concurrency=group_cap or None, global_concurrency=global_cap or None)
        self.run(self.queue.set_limits(limits))
        self.model.group_concurrency, self.model.global_concurrency = group_cap, global_cap
        if weight_a != 1.0:
            self.run(self.queue.set_group("a", GroupSettings(weight=weight_a)))
            self.model.set_group("a", GroupConf(weight=weight_a))

    @rule(
        specs=st.lists(
            st.tuples(
                st.one_of(st.none(), st.integers(min_value=0, max_value=4)),
                st.sampled_from(GROUPS),
                st.sampled_from([None, 1, 5]),
                st.sampled_from(DELAY_KINDS),
                st.integers(min_value=1, max_value=3),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def add(self, specs: list[tuple[int | None, str, int | None, str, int]]) -> None:
        bulk = [
            BulkJob(
                "j",
                {"n": i},
                JobOptions(
                    job_id=None if slot is None else f"x{slot}",
                    group=group or None,
                    priority=priority,
                    delay_ms=_delay_ms(delay),
                    attempts=attempts,
                ),
            )
            for i, (slot, group, priority, delay, attempts) in enumerate(specs)
        ]
        results = self.run(self.queue.add_bulk(bulk))
        for (slot, group, priority, delay, attempts), result in zip(specs, results, strict=True):
            if slot is not None and f"x{slot}" in self.model.jobs:
                assert not result.created, f"a second add of live id x{slot} created a job"
                continue
            if not result.created:
                # An id seen before whose record is gone: de-duplication beyond retention may keep it out.
                assert result.job_id in self.ever_ids, f"add of a new id {result.job_id} created nothing"
                continue
            rec = self.record(result.job_id)
            assert rec is not None
            job = MJob(
                id=result.job_id,
                group=group,
                priority=priority or DEFAULT_PRIORITY,
                seq=int(rec["seq"]),
                attempts=attempts,
                state=DELAYED if delay != "now" else WAITING,
                due_ms=rec.get("due_ms"),
                due=delay == "short",
            )
            self.ever_ids.add(job.id)
            self.model.add(job)
        if any(d == "short" for *_, d, _a in specs):
            time.sleep(0.003)

    @rule(want=st.integers(min_value=1, max_value=4), expired_lease=st.booleans())
    def fetch(self, want: int, expired_lease: bool) -> None:
        lease_ms = 0 if expired_lease else LONG_MS
        reply = self.call("fetch", WORKER, lease_ms, want)
        self.check_started(reply, self.model.fetch(want), expired_lease)

    def check_started(self, reply: list[Any], model: tuple[int, list[str]], expired_lease: bool) -> None:
        """A fetch reply starts exactly the model's jobs, in its order, each under a token never granted before."""
        status, expected = model
        flat = reply[2:]
        got = [str(flat[i]) for i in range(0, len(flat), 4)]
        assert got == expected, f"fair order: started {got}, the model starts {expected}"
        assert int(reply[0]) == status
        for i in range(0, len(flat), 4):
            job_id, rec, token = str(flat[i]), json.loads(flat[i + 1]), str(flat[i + 3])
            assert token not in self.tokens, f"lease token {token} granted to two runs"
            self.tokens.add(token)
            self.runs.append((job_id, token))
            job = self.model.jobs[job_id]
            job.token = token
            job.expired_at_ms = int(rec["processed_ms"]) if expired_lease else None

    @precondition(lambda self: bool(self.model.in_state(ACTIVE)))
    @rule(pick=PICK)
    def complete(self, pick: int) -> None:
        job = self.pick(self.model.in_state(ACTIVE), pick)
        assert job.token is not None
        token = job.token
        reply = self.call("complete", KEEP, 0, MAX_EVENTS, WORKER, LONG_MS, 0, "", job.id, token, "1", -1)
        assert int(reply[1]) == 0
        self.model.complete(job, int(reply[0]))
        job.remember(token, 1, "complete")

    @precondition(lambda self: bool(self.model.in_state(ACTIVE)))
    @rule(pick=PICK, size=st.integers(min_value=1, max_value=3), twice=st.booleans(), want=st.integers(0, 3))
    def complete_batch_and_fetch(self, pick: int, size: int, twice: bool, want: int) -> None:
        """Completions of one group sent together (group commit), maybe one twice, then the next starts (want)."""
        group = self.pick(self.model.in_state(ACTIVE), pick).group
        batch = sorted((j for j in self.model.in_state(ACTIVE) if j.group == group), key=lambda j: j.seq)[:size]
        sent = batch + batch[:1] if twice else batch
        args: list[str | int] = [KEEP, 0, MAX_EVENTS, WORKER, LONG_MS, want, ""]
        for job in sent:
            assert job.token is not None
            args += [job.id, job.token, "1", -1]
        reply = self.call("complete", *args)
        codes = [int(c) for c in reply[1 : 1 + len(sent)]]
        # A job sent twice in one call is finished once: the second is refused as a lost lease.
        assert codes == [0] * len(batch) + ([-2] if twice else [])
        for job in batch:
            token = job.token
            self.model.complete(job, int(reply[0]))
            job.remember(token, 1, "complete")
        if want > 0:
            self.check_started(reply[1 + len(sent) :], self.model.fetch(want), expired_lease=False)

    @precondition(lambda self: bool(self.model.in_state(ACTIVE)))
    @rule(pick=PICK, unrecoverable=st.booleans(), delay=st.sampled_from(DELAY_KINDS))
    def fail(self, pick: int, unrecoverable: bool, delay: str) -> None:
        job = self.pick(self.model.in_state(ACTIVE), pick)
        assert job.token is not None
        final = unrecoverable or job.attempts_made + 1 >= job.attempts
        delay_ms = -1 if final else _delay_ms(delay)
        token = job.token
        reply = self.call("fail", job.id, token, "boom", "", delay_ms, KEEP, 0, MAX_EVENTS, 3)
        assert [int(x) for x in reply] == [0, job.attempts_made + 1, 1 if final else 0]
        self.model.fail(job, final, delay)
        job.remember(token, 1 if final else 0, "fail")
        self.read_times(job)
        if delay == "short" and not final:
            time.sleep(0.003)

    @precondition(lambda self: bool(self.model.in_state(ACTIVE)))
    @rule(pick=PICK, delay=st.sampled_from(DELAY_KINDS), hold=st.booleans())
    def release(self, pick: int, delay: str, hold: bool) -> None:
        """RetryAfter (a delay, maybe holding the queue: only briefly, or the run would stop here) or a shutdown."""
        job = self.pick(self.model.in_state(ACTIVE), pick)
        assert job.token is not None
        hold = hold and delay == "short"
        token = job.token
        delay_ms = _delay_ms(delay)
        # A RetryAfter hold counts against the job's bound (none set here); a shutdown release (0) does not.
        reply = self.call("release", job.id, token, delay_ms, 1 if hold else 0, "later", MAX_EVENTS, delay_ms, 0)
        assert [int(x) for x in reply] == [0]
        self.model.release(job, delay)
        job.remember(token, 0, "release")
        self.read_times(job)
        if delay == "short":
            time.sleep(0.003)

    @precondition(lambda self: any(self.stale(r) for r in self.runs))
    @rule(pick=PICK, as_failure=st.booleans())
    def finish_with_a_lost_lease(self, pick: int, as_failure: bool) -> None:
        """A finish by a run that no longer holds the lease changes nothing: refused (-2, or -1 once the job is gone),
        or, re-sent by a run that did finish (one of the job's last 4), answered as the first call was."""
        stale = [r for r in self.runs if self.stale(r)]
        job_id, token = stale[pick % len(stale)]
        job = self.model.jobs.get(job_id)
        call = "fail" if as_failure else "complete"
        first = None if job is None else next((d for d in job.done if d[0] == token and d[3] == call), None)
        if as_failure:
            reply = [int(x) for x in self.call("fail", job_id, token, "late", "", -1, KEEP, 0, MAX_EVENTS, 3)]
            if job is None:
                assert reply[0] == -1
            elif first is None:
                assert reply[0] == -2
            else:
                assert reply == [0, first[1], first[2]]
        else:
            args: list[str | int] = [KEEP, 0, MAX_EVENTS, WORKER, LONG_MS, 0, "", job_id, token, "1", -1]
            code = int(self.call("complete", *args)[1])
            assert code == (-1 if job is None else -2 if first is None else 0)

    def stale(self, run: tuple[str, str]) -> bool:
        job = self.model.jobs.get(run[0])
        return job is None or job.token != run[1]

    @precondition(lambda self: any(j.expired_at_ms is not None for j in self.model.in_state(ACTIVE)))
    @rule(pick=PICK)
    def extend(self, pick: int) -> None:
        job = self.pick([j for j in self.model.in_state(ACTIVE) if j.expired_at_ms is not None], pick)
        assert job.token is not None
        assert list(self.call("extend", LONG_MS, job.id, job.token)) == []
        job.expired_at_ms = None

    @rule()
    def check_stalled(self) -> None:
        reply = self.call("stalled", MAX_STALLS, KEEP, 0, MAX_EVENTS)
        got = [(str(reply[i]), str(reply[i + 1])) for i in range(0, len(reply), 4)]
        assert got == self.model.stalled(MAX_STALLS)
        for job_id, outcome in got:
            if outcome == FAILED:
                self.read_times(self.model.jobs[job_id])

    @precondition(lambda self: bool(self.model.jobs))
    @rule(pick=PICK)
    def retry(self, pick: int) -> None:
        job = self.pick(list(self.model.jobs.values()), pick)
        if job.state in (COMPLETED, FAILED):
            self.run(self.queue.retry(job.id))
            self.model.retry(job)
        else:
            with pytest.raises(JobStateError):
                self.run(self.queue.retry(job.id))

    @precondition(lambda self: bool(self.model.jobs))
    @rule(pick=PICK)
    def remove(self, pick: int) -> None:
        job = self.pick(list(self.model.jobs.values()), pick)
        if job.state == ACTIVE:
            with pytest.raises(JobStateError):
                self.run(self.queue.remove(job.id))
        else:
            self.run(self.queue.remove(job.id))
            self.model.remove(job)
            with pytest.raises(JobNotFoundError):
                self.run(self.queue.remove(job.id))

    @rule(state=st.sampled_from([JobState.COMPLETED, JobState.FAILED, JobState.WAITING, JobState.DELAYED]))
    def clean(self, state: JobState) -> None:
        victims = self.model.in_state(state.value)
        assert self.run(self.queue.clean(state)) == len(victims)
        for job in victims:
            self.model.remove(job)

    @rule(group_cap=st.sampled_from([0, 1, 2]), global_cap=st.sampled_from([0, 2, 3]))
    def set_limits(self, group_cap: int, global_cap: int) -> None:
        """New limits bind from the next fetch; groups already parked or ready stay where they are until then."""
        limits = QueueLimits(group_concurrency=group_cap or None, global_concurrency=global_cap or None)
        self.run(self.queue.set_limits(limits))
        self.model.group_concurrency, self.model.global_concurrency = group_cap, global_cap

    @rule(paused=st.booleans())
    def pause(self, paused: bool) -> None:
        self.run(self.queue.pause() if paused else self.queue.resume())
        self.model.paused = paused

    @rule(
        group=st.sampled_from(GROUPS[1:]),  # the ungrouped jobs' group "" takes the queue's settings only
        weight=st.sampled_from([1.0, 2.0]),
        cap=st.sampled_from([None, 1, 2]),
        reset=st.booleans(),
    )
    def set_group(self, group: str, weight: float, cap: int | None, reset: bool) -> None:
        if reset:
            self.run(self.queue.set_group(group, None))
            self.model.set_group(group, None)
        else:
            self.run(self.queue.set_group(group, GroupSettings(weight=weight, concurrency=cap)))
            self.model.set_group(group, GroupConf(weight, cap))

    def read_times(self, job: MJob) -> None:
        """Read back what Redis's clock decided: a delayed job's due time, a failed one's finish time."""
        rec = self.record(job.id)
        if rec is not None:
            job.due_ms = rec.get("due_ms")
            job.finished_ms = rec.get("finished_ms")

    # -- invariants -----------------------------------------------------------------------------------------

    def reconcile_retention(self) -> None:
        """Finished sets hold at most KEEP; what retention deleted was the oldest, record and data with it."""
        for state in (COMPLETED, FAILED):
            scored = cast(list[tuple[str, float]], self.sync.zrange(self.key(state), 0, -1, withscores=True))
            kept = {str(m): int(s) for m, s in scored}
            ours = {j.id: j for j in self.model.in_state(state)}
            assert set(kept) <= set(ours), f"{state} holds jobs the model does not: {set(kept) - set(ours)}"
            assert len(kept) == min(KEEP, len(ours)), f"{state}: {len(kept)} kept of {len(ours)}, keep {KEEP}"
            oldest_kept = min(((s, m) for m, s in kept.items()), default=None)
            for job_id in set(ours) - set(kept):
                assert not self.sync.hexists(self.key("jobs"), job_id), f"trimmed {job_id} left its record"
                assert not self.sync.hexists(self.key("data"), job_id), f"trimmed {job_id} left its data"
                gone = ours[job_id].finished_ms
                if gone is not None and oldest_kept is not None:
                    assert (gone, job_id) < oldest_kept, f"retention kept a job older than {job_id}"
                del self.model.jobs[job_id]

    @invariant()
    def engine_matches_model(self) -> None:
        self.reconcile_retention()
        pipe = self.sync.pipeline(transaction=False)
        pipe.hgetall(self.key("jobs"))
        pipe.zrange(self.key("wait"), 0, -1)
        for name in ("delayed", "active", "completed", "failed"):
            pipe.zrange(self.key(name), 0, -1)
        pipe.hgetall(self.key("group_waiting"))
        pipe.hgetall(self.key("group_active"))
        pipe.zrange(self.key("groups"), 0, -1)
        pipe.hgetall(self.key("group_pass"))
        records, wait, delayed, active, completed, failed, g_waiting, g_active, ready, places = pipe.execute()
        where: dict[str, list[str]] = {}
        wait_ids = [str(m).split("\0", 1)[1][26:] for m in wait]
        for state, ids in zip(STATES, (wait_ids, delayed, active, completed, failed), strict=True):
            for job_id in ids:
                where.setdefault(str(job_id), []).append(state)
        # Each job in exactly one state, the one its record says, and the model's.
        assert {i: s for i, s in where.items() if len(s) != 1} == {}, "a job in two states"
        assert set(where) == {str(i) for i in records}, "a state set and the records disagree"
        for job_id, raw in records.items():
            assert json.loads(raw)["state"] == where[str(job_id)][0]
        assert {i: s[0] for i, s in where.items()} == {j.id: j.state for j in self.model.jobs.values()}
        counts = self.run(self.queue.counts())
        assert {s.value: n for s, n in counts.items()} == self.model.counts()
        # Group bookkeeping, and the fair order of the ready set.
        assert {str(g): int(n) for g, n in g_waiting.items()} == self.model.waiting
        assert {str(g): int(n) for g, n in g_active.items()} == self.model.active
        assert [str(g) for g in ready] == self.model.ready_order()
        # Places (pass, tick): kept by parked groups, dropped by groups with nothing waiting or running.
        saved = {str(g): (float(p.split()[0]), int(p.split()[1])) for g, p in places.items()}
        assert saved == self.model.places
        self.check_events()

    def check_events(self) -> None:
        """Each final state reached shows as exactly one completed or failed event."""
        raw = self.sync.xrange(self.key("events"), min=f"({self.events_seen}")
        entries = cast(list[tuple[str, dict[str, str]]], raw)
        for entry_id, fields in entries:
            self.events_seen = entry_id
            if fields["event"] == "completed":
                for job_id in json.loads(fields["job_ids"]):
                    self.completed_events[job_id] = self.completed_events.get(job_id, 0) + 1
            elif fields["event"] == "failed" and fields.get("job_id"):
                failed = fields["job_id"]
                self.failed_events[failed] = self.failed_events.get(failed, 0) + 1
        assert self.completed_events == self.model.completions, "completed events differ from completions"
        assert self.failed_events == self.model.failures, "failed events differ from final failures"


def _run(redis_url: str, examples: int, steps: int) -> None:
    loop = asyncio.new_event_loop()
    client = create_redis(redis_url)
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    machine = type("Machine", (EngineMachine,), {"redis_url": redis_url, "loop": loop, "client": client, "sync": sync})
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                print_blob=True,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
        sync.close()


def test_engine_matches_its_model_step_by_step(redis_url: str) -> None:
    """Random runs of add/fetch/finish/fail/release/stall/retry/remove/clean/pause keep every invariant."""
    _run(redis_url, examples=200, steps=25)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_engine_matches_its_model_over_thousands_of_runs(redis_url: str) -> None:
    """The same machine, thousands of runs and longer ones."""
    _run(redis_url, examples=3000, steps=50)
