"""A plain-Python reference model of the engine's states, group bookkeeping and fair order, for the stateful test.

It says what the Lua scripts must do, step by step, without Redis: which jobs a fetch starts and in what order
(stride scheduling: the ready group with the lowest place, pass then tick; a group keeps its place while parked
at its cap; a new group starts at the virtual time), what a finish, a failure, a release, a stall check, a retry,
a remove and a clean leave behind. Times (Redis's clock) are not predicted: the test reads them from Redis and
hands them in (finish ms, due ms, lease deadlines), so the model predicts behaviour, never the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WAITING, DELAYED, ACTIVE, COMPLETED, FAILED = "waiting", "delayed", "active", "completed", "failed"
STATES = (WAITING, DELAYED, ACTIVE, COMPLETED, FAILED)


@dataclass
class MJob:
    """One job as the model sees it."""

    id: str
    group: str
    priority: int
    seq: int
    attempts: int
    state: str
    attempts_made: int = 0
    stalls: int = 0
    due_ms: int | None = None
    # A delayed job the next fetch will promote (its due time has passed); long delays never come due here.
    due: bool = False
    token: str | None = None
    # The lease deadline when it has run out (a lease of 0 ms); None for a lease that outlives the test.
    expired_at_ms: int | None = None
    finished_ms: int | None = None
    # The runs that finished, newest first (the record's `done`, last 4): (token, attempts_made, final, call).
    done: list[tuple[str, int, int, str]] = field(default_factory=list)

    def remember(self, token: str | None, final: int, call: str) -> None:
        """A run finished (completed, failed or released): the same call re-sent answers as this one did."""
        if token is not None:
            self.done = [(token, self.attempts_made, final, call), *self.done][:4]


@dataclass
class GroupConf:
    weight: float = 1.0
    concurrency: int | None = None


@dataclass
class Model:
    """The engine's state, as the scripts must leave it."""

    group_concurrency: int = 0
    global_concurrency: int = 0
    conf: dict[str, GroupConf] = field(default_factory=dict)
    jobs: dict[str, MJob] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    places: dict[str, tuple[float, int]] = field(default_factory=dict)
    vclock: float = 0.0
    tick: int = 0
    paused: bool = False
    # Final states reached, per job: each must show as exactly one event in the stream.
    completions: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    # -- group bookkeeping (make_ready, push_wait, pull_wait, leave_active in _common.lua) -------------------

    def settings(self, group: str) -> tuple[float, int]:
        """The group's weight and cap (0: none)."""
        own = self.conf.get(group)
        weight, cap = 1.0, self.group_concurrency
        if own is not None:
            weight = own.weight
            if own.concurrency is not None:
                cap = own.concurrency
        return weight, cap

    def make_ready(self, group: str) -> None:
        if group in self.ready:
            return
        if self.waiting.get(group, 0) <= 0:
            if self.active.get(group, 0) <= 0:
                self.places.pop(group, None)
            return
        _, cap = self.settings(group)
        if cap > 0 and self.active.get(group, 0) >= cap:
            return
        place = self.places.get(group)
        if place is None or place[0] < self.vclock:
            self.tick += 1
            place = (self.vclock, self.tick)
            self.places[group] = place
        self.ready.add(group)

    def push_wait(self, job: MJob) -> None:
        job.state = WAITING
        job.due_ms, job.due = None, False
        self.waiting[job.group] = self.waiting.get(job.group, 0) + 1
        self.make_ready(job.group)

    def pull_wait(self, job: MJob) -> None:
        left = self.waiting[job.group] - 1
        if left <= 0:
            del self.waiting[job.group]
            self.ready.discard(job.group)
            if self.active.get(job.group, 0) <= 0:
                self.places.pop(job.group, None)
        else:
            self.waiting[job.group] = left

    def leave_active(self, job: MJob) -> None:
        left = self.active[job.group] - 1
        if left <= 0:
            del self.active[job.group]
        else:
            self.active[job.group] = left
        job.token, job.expired_at_ms = None, None
        self.make_ready(job.group)

    def ready_order(self) -> list[str]:
        return sorted(self.ready, key=lambda g: self.places[g])

    # -- transitions ------------------------------------------------------------------------------------------

    def add(self, job: MJob) -> None:
        """A created job (its seq and due time read back from Redis)."""
        self.jobs[job.id] = job
        if job.state == DELAYED:
            return
        self.push_wait(job)

    def promote_due(self) -> None:
        due = sorted((j for j in self.jobs.values() if j.state == DELAYED and j.due), key=_due_key)
        for job in due:
            self.push_wait(job)

    def fetch(self, want: int) -> tuple[int, list[str]]:
        """The status and the ids started, in order (tokens are the test's to record)."""
        self.promote_due()
        if self.paused:
            return 3, []
        started: list[str] = []
        status, tries = 1, 0
        while len(started) < want and tries < want + 32:
            tries += 1
            room = want - len(started)
            if self.global_concurrency > 0:
                running = sum(1 for j in self.jobs.values() if j.state == ACTIVE)
                if running >= self.global_concurrency:
                    status = 5
                    break
                room = min(room, self.global_concurrency - running)
            order = self.ready_order()
            if not order:
                status = 1
                break
            group = order[0]
            pass_ = self.places[group][0]
            next_pass = self.places[order[1]][0] if len(order) > 1 else None
            weight, cap = self.settings(group)
            if next_pass is not None:
                room = min(room, max(1, math.ceil((next_pass - pass_) * weight)))
            if cap > 0:
                if self.active.get(group, 0) >= cap:
                    self.ready.discard(group)
                    continue
                room = min(room, cap - self.active.get(group, 0))
            queued = sorted(
                (j for j in self.jobs.values() if j.state == WAITING and j.group == group),
                key=lambda j: (j.priority, j.seq),
            )
            chosen = queued[:room]
            c = len(chosen)
            self.waiting[group] -= c
            self.active[group] = self.active.get(group, 0) + c
            self.tick += 1
            new_pass = pass_ + c / weight
            self.places[group] = (new_pass, self.tick)
            self.vclock = new_pass if next_pass is None else min(new_pass, next_pass)
            if self.waiting[group] <= 0:
                del self.waiting[group]
                self.ready.discard(group)
            elif cap > 0 and self.active[group] >= cap:
                self.ready.discard(group)
            for job in chosen:
                job.state = ACTIVE
                started.append(job.id)
        if not started:
            return status, started
        # Drained (status 7): the fetch ended for want of a ready group, with room left.
        drained = status == 1 and len(started) < want and not self.ready_order()
        return (7 if drained else 0), started

    def complete(self, job: MJob, finished_ms: int) -> None:
        self.leave_active(job)
        job.state, job.finished_ms = COMPLETED, finished_ms
        job.attempts_made += 1
        self.completions[job.id] = self.completions.get(job.id, 0) + 1

    def fail(self, job: MJob, final: bool, delay_kind: str) -> None:
        """delay_kind: "now" (back to waiting), "short" (due by the next fetch) or "long" (never due here)."""
        self.leave_active(job)
        job.attempts_made += 1
        if final:
            self._final_failure(job)
        elif delay_kind == "now":
            self.push_wait(job)
        else:
            job.state, job.due = DELAYED, delay_kind == "short"

    def release(self, job: MJob, delay_kind: str) -> None:
        self.leave_active(job)
        if delay_kind == "now":
            self.push_wait(job)
        else:
            job.state, job.due = DELAYED, delay_kind == "short"

    def stalled(self, max_stalls: int) -> list[tuple[str, str]]:
        """Recover expired leases in deadline order: back to waiting, or failed past max_stalls."""
        expired = sorted(
            (j for j in self.jobs.values() if j.state == ACTIVE and j.expired_at_ms is not None),
            key=lambda j: (j.expired_at_ms, j.id),
        )
        out: list[tuple[str, str]] = []
        for job in expired:
            self.leave_active(job)
            job.stalls += 1
            if job.stalls > max_stalls:
                self._final_failure(job)
                out.append((job.id, FAILED))
            else:
                self.push_wait(job)
                out.append((job.id, WAITING))
        return out

    def retry(self, job: MJob) -> None:
        job.attempts_made, job.stalls, job.finished_ms = 0, 0, None
        self.push_wait(job)

    def remove(self, job: MJob) -> None:
        if job.state == WAITING:
            self.pull_wait(job)
        del self.jobs[job.id]

    def set_group(self, group: str, conf: GroupConf | None) -> None:
        if conf is None:
            self.conf.pop(group, None)
        else:
            self.conf[group] = conf
        self.make_ready(group)

    def _final_failure(self, job: MJob) -> None:
        job.state = FAILED
        self.failures[job.id] = self.failures.get(job.id, 0) + 1

    # -- reading ----------------------------------------------------------------------------------------------

    def in_state(self, state: str) -> list[MJob]:
        return [j for j in self.jobs.values() if j.state == state]

    def counts(self) -> dict[str, int]:
        return {s: len(self.in_state(s)) for s in STATES}


def _due_key(job: MJob) -> tuple[int, str]:
    # The delayed set orders by due ms, then by member bytes (the id).
    return (job.due_ms or 0, job.id)
