"""Queue: add jobs and operate on them (get, count, list, retry, remove, clean, pause, resume, drain)."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_backend.queue._add_line import AddLine
from slack_backend.queue._keys import QueueKeys
from slack_backend.queue._scripts import Scripts
from slack_backend.queue.connection import RedisClient
from slack_backend.queue.errors import InvalidJobDataError, NotReplicatedError, raise_for_code
from slack_backend.queue.events import DEFAULT_MAX_EVENTS
from slack_backend.queue.gate import RateGate
from slack_backend.queue.job import (
    DEFAULT_PRIORITY,
    Backoff,
    Job,
    JobOptions,
    JobState,
    check_identifier,
    check_options,
    dumps_compact,
)
from slack_backend.queue.limits import GroupSettings, QueueLimits, RateLimit

DEFAULT_MAX_DATA_BYTES = 512 * 1024
# Slack re-delivers an event it saw no ack for after about 1 and 5 minutes, and a user may retry a shortcut for
# longer: a caller-chosen id is refused for a day, however soon retention trims the finished job.
DEFAULT_DEDUP_TTL_MS = 24 * 3600 * 1000
BATCH = 1000
# Record heads kept per queue (one per name, group, priority, options and cost seen); past it the cache starts over.
_HEADS_KEPT = 256


@dataclass(frozen=True, kw_only=True)
class JobDefaults:
    """What a job gets when `add()` does not say: attempts, backoff and priority."""

    attempts: int = 4
    backoff: Backoff = field(default_factory=Backoff)
    priority: int = DEFAULT_PRIORITY


@dataclass(frozen=True)
class AddResult:
    """The id a job was stored under, and whether this call created it (False: a job with that id was kept)."""

    job_id: str
    created: bool


@dataclass(frozen=True)
class BulkJob:
    """One entry of `add_bulk`: a name, its data and its options."""

    name: str
    data: Any
    options: JobOptions = field(default_factory=JobOptions)


@dataclass(frozen=True)
class GroupInfo:
    """A group's live numbers, for dashboards and the CLI."""

    group: str
    waiting: int
    active: int


class Queue:
    """A named queue in Redis. Safe to share; each call is one atomic script or a read."""

    def __init__(
        self,
        name: str,
        *,
        connection: RedisClient,
        prefix: str = "sb",
        defaults: JobDefaults | None = None,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
        dedup_ttl_ms: int = DEFAULT_DEDUP_TTL_MS,
        min_replicas_ack: int = 0,
        replicas_ack_timeout_ms: int = 500,
    ) -> None:
        """A queue named `name` on `connection`.

        Args:
            dedup_ttl_ms: how long a caller-chosen job id is refused after its job was added, whether or not
                the job is still kept (0: only while its record is kept).
            min_replicas_ack: after each add, wait (Redis WAIT) until this many replicas hold it; fewer within
                `replicas_ack_timeout_ms` raises NotReplicatedError (the jobs stay). 0: answer at once. Replication
                is asynchronous, so without it an add answered just before a failover can be lost. On a Cluster the
                WAIT goes to the primary that owns the queue's slot.
        """
        if dedup_ttl_ms < 0:
            raise ValueError("dedup_ttl_ms must be >= 0")
        if min_replicas_ack < 0 or replicas_ack_timeout_ms < 1:
            raise ValueError("min_replicas_ack must be >= 0 and replicas_ack_timeout_ms >= 1")
        self.min_replicas_ack = min_replicas_ack
        self.replicas_ack_timeout_ms = replicas_ack_timeout_ms
        self.name = name
        self.dedup_ttl_ms = dedup_ttl_ms
        self.keys = QueueKeys(prefix, name)
        self.redis = connection
        self.defaults = defaults or JobDefaults()
        self.max_events = max_events
        self.max_data_bytes = max_data_bytes
        self._scripts = Scripts(connection, self.keys)
        # Ids for jobs added without one are chosen here, before the first send, so an add re-sent after a lost
        # reply finds its job instead of making a second. All digits (callers' ids never are): the time, a salt
        # of this Queue object, and a counter.
        self._id_salt = f"{random.randrange(10**6):06d}"
        self._id_seq = itertools.count()
        self._default_opts = _opts_json(self.defaults.attempts, self.defaults.backoff)
        # The JSON head of a record depends only on these few options, so it is encoded once per combination.
        self._heads: dict[tuple[str, str, int, str, int], str] = {}
        self._add_line = AddLine.for_client(connection, *self._scripts.wire("add"), dedup_ttl_ms)

    async def call(self, script: str, *args: str | int | float) -> Any:
        """Run one of the queue's scripts (for the worker; not for application code)."""
        return await self._scripts.call(script, args)

    async def call_after_blpop(
        self, client: RedisClient, wait_keys: Sequence[str], timeout_s: float, script: str, *args: str | int | float
    ) -> Any:
        """BLPOP on `wait_keys`, then run a script, in one pipeline: Redis runs the script as the wait ends.

        Returns the script's reply, or None when Redis had lost the script (it is loaded again; call anew).
        For the worker, on its blocking client.
        """
        return await self._scripts.call_after_blpop(client, wait_keys, timeout_s, script, args)

    # -- adding -------------------------------------------------------------------------------------------

    async def add(
        self,
        name: str,
        data: Any,
        *,
        job_id: str | None = None,
        priority: int | None = None,
        delay_ms: int = 0,
        attempts: int | None = None,
        backoff: Backoff | None = None,
        group: str | None = None,
        cost: int | None = None,
    ) -> AddResult:
        """Add one job; with `job_id`, a second add of the same id within the de-duplication TTL (or while the
        job is kept) does nothing and answers `created=False`.

        Raises InvalidJobDataError (nothing written) when the data is not JSON or the options are invalid.
        """
        # The options are checked as JobOptions checks them, without building one: a frozen dataclass of seven
        # fields cost each add about 1 us, a few percent of a one-by-one add's client CPU.
        check_options(job_id, priority, delay_ms, attempts, group, cost)
        spec = self._spec_of(name, data, job_id, group, priority, delay_ms, attempts, backoff, cost)
        if not self.min_replicas_ack and self._add_line is not None:
            reply = await self._add_line.add(spec)
            if reply is not None:
                return AddResult(str(reply[0]), bool(int(reply[1])))
        # The replica ack, a Cluster, or what the pre-packed path hands on (NOSCRIPT, a lost link): the usual call.
        return (await self._add_specs([spec]))[0]

    async def add_bulk(self, jobs: Sequence[BulkJob]) -> list[AddResult]:
        """Add many jobs, a thousand per atomic script call; every spec is checked before anything is written."""
        return await self._add_specs([self._spec(job.name, job.data, job.options) for job in jobs])

    async def _add_specs(self, specs: Sequence[str]) -> list[AddResult]:
        results: list[AddResult] = []
        for start in range(0, len(specs), BATCH):
            args: list[str | int | float] = [self.dedup_ttl_ms, *specs[start : start + BATCH]]
            if not self.min_replicas_ack:
                pairs = list(await self.call("add", *args))
            else:
                reply, acked = await self._scripts.call_then_wait(
                    self.redis, "add", args, self.min_replicas_ack, self.replicas_ack_timeout_ms
                )
                pairs = list(reply)  # type: ignore[call-overload]
                if acked < self.min_replicas_ack:
                    ids = [str(pairs[i]) for i in range(0, len(pairs), 2)]
                    raise NotReplicatedError(ids, acked, self.min_replicas_ack, self.replicas_ack_timeout_ms)
            results.extend(_add_results(pairs))
        return results

    def _spec(self, name: str, data: Any, o: JobOptions) -> str:
        """One job as add.lua takes it: id, group, priority, delay, the record's head and the data, NUL-joined."""
        return self._spec_of(name, data, o.job_id, o.group, o.priority, o.delay_ms, o.attempts, o.backoff, o.cost)

    def _spec_of(
        self,
        name: str,
        data: Any,
        job_id: str | None,
        group: str | None,
        priority: int | None,
        delay_ms: int,
        attempts: int | None,
        backoff: Backoff | None,
        cost: int | None,
    ) -> str:
        """`_spec` of options already checked, given one by one."""
        try:
            data_json = dumps_compact(data)
        except (TypeError, ValueError) as exc:
            raise InvalidJobDataError(f"job data must be JSON-serializable: {exc}") from exc
        if len(data_json) > self.max_data_bytes // 4 and len(data_json.encode()) > self.max_data_bytes:
            raise InvalidJobDataError(f"job data is larger than {self.max_data_bytes} bytes")
        priority = priority or self.defaults.priority
        group = group or ""
        if attempts is None and backoff is None:
            opts = self._default_opts
        else:
            opts = _opts_json(attempts or self.defaults.attempts, backoff or self.defaults.backoff)
        head_key = (name, group, priority, opts, cost or 0)
        head = self._heads.get(head_key) if isinstance(name, str) else None  # a bad name gets its clear error
        if head is None:
            check_identifier("job name", name)
            head = _record_head(*head_key)
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[head_key] = head
        return f"{job_id or self._new_id()}\0{group}\0{priority}\0{delay_ms}\0{head}\0{data_json}"

    def _new_id(self) -> str:
        return f"{int(time.time() * 1000)}{self._id_salt}{next(self._id_seq) % 10**6:06d}"

    # -- reading ------------------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job, or None when it is not (or no longer) kept."""
        jobs = await self.get_many([job_id])
        return jobs[0] if jobs else None

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs still kept among `job_ids`, in the same order (ids no longer kept are left out)."""
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.key("jobs"), list(job_ids))
            pipe.hmget(self.keys.key("data"), list(job_ids))
            recs, datas = await pipe.execute()
        return [Job.from_record(r, d) for r, d in zip(recs, datas, strict=True) if r is not None]

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.key("wait"))
            pipe.zcard(self.keys.key("delayed"))
            pipe.zcard(self.keys.key("active"))
            pipe.zcard(self.keys.key("completed"))
            pipe.zcard(self.keys.key("failed"))
            w, d, a, c, f = await pipe.execute()
        return {
            JobState.WAITING: int(w),
            JobState.DELAYED: int(d),
            JobState.ACTIVE: int(a),
            JobState.COMPLETED: int(c),
            JobState.FAILED: int(f),
        }

    async def job_ids(self, state: JobState, start: int = 0, end: int = -1) -> list[str]:
        """Ids in a state, by rank: newest first for completed/failed, next to run first otherwise."""
        if state is JobState.WAITING:
            members = await self.redis.zrange(self.keys.key("wait"), start, end)
            return [str(m).split("\0", 1)[1][26:] for m in members]
        key = self.keys.key({JobState.DELAYED: "delayed", JobState.ACTIVE: "active"}.get(state, state.value))
        newest_first = state in (JobState.COMPLETED, JobState.FAILED)
        ids = await self.redis.zrange(key, start, end, desc=newest_first)
        return [str(i) for i in ids]

    async def get_jobs(self, state: JobState, start: int = 0, end: int = -1) -> list[Job]:
        """Jobs in a state, paged by rank (see job_ids for the order)."""
        return await self.get_many(await self.job_ids(state, start, end))

    async def groups(self, limit: int = 20) -> list[GroupInfo]:
        """The busiest groups by waiting jobs."""
        waiting = _str_map(await self.redis.hgetall(self.keys.key("group_waiting")))
        active = _str_map(await self.redis.hgetall(self.keys.key("group_active")))
        names = set(waiting) | set(active)
        infos = [GroupInfo(g, int(waiting.get(g, 0)), int(active.get(g, 0))) for g in names]
        infos.sort(key=lambda i: (-i.waiting, -i.active, i.group))
        return infos[:limit]

    async def is_paused(self) -> bool:
        """Whether the queue is paused (no worker starts jobs)."""
        return bool(await self.redis.hexists(self.keys.key("meta"), "paused"))

    async def hold_remaining_ms(self) -> int:
        """How long the queue is still held by an upstream Retry-After (0 when it is not)."""
        raw = await self.redis.hget(self.keys.key("meta"), "hold_until_ms")
        return max(0, int(raw) - int(time.time() * 1000)) if raw else 0

    async def budget_used(self) -> int:
        """Tokens reserved or spent by starts inside the budget's current window."""
        raw = await self.redis.hget(self.keys.key("meta"), "budget_used")
        return int(raw or 0)

    async def hold(self, delay_ms: int) -> None:
        """Start no job of this queue for `delay_ms` (an upstream limit says so); a longer hold already set stays."""
        await self.call("hold", delay_ms, self.max_events)

    async def limits(self) -> QueueLimits:
        """The limits every worker of this queue obeys."""
        raw = await self.redis.hget(self.keys.key("meta"), "config")
        return QueueLimits.from_json(None if raw is None else str(raw))

    def call_gate(self, limit: RateLimit) -> RateGate:
        """The queue's call gate: its jobs take a slot right before each upstream call (see RateGate).

        Every process's gate of this queue shares one window, so `limit` should be the same everywhere: give it
        the queue's start rate, whose fetch then decides which job goes next while the gate bounds the calls.
        """
        return RateGate(self.redis, self.keys.calls(), limit, name=self.name)

    async def workers(self) -> dict[str, dict[str, Any]]:
        """Workers that reported in, by id, with their last heartbeat (ms) and load."""
        raw = _str_map(await self.redis.hgetall(self.keys.key("workers")))
        return {wid: json.loads(v) for wid, v in raw.items()}

    # -- operating ----------------------------------------------------------------------------------------

    async def set_limits(self, limits: QueueLimits) -> None:
        """Set the limits every worker of this queue obeys from its next fetch on."""
        await self.call("configure", limits.to_json(), "", "")

    async def refresh(self) -> None:
        """Recount the bookkeeping the scripts keep about settings (workers call this at start)."""
        await self.call("configure", "", "", "")

    async def set_group(self, group: str, settings: GroupSettings | None) -> None:
        """Give one group its own weight, cap or rate (None: back to the queue's defaults)."""
        check_identifier("group", group)
        await self.call("configure", "", group, settings.to_json() if settings else "")

    async def retry(self, job_id: str) -> None:
        """Send a failed or completed job back to waiting with its attempts reset."""
        code = int((await self.call("retry", self.max_events, job_id))[0])
        raise_for_code(code, job_id, "only failed or completed jobs can be retried")

    async def retry_many(self, job_ids: Sequence[str]) -> int:
        """Retry many failed or completed jobs, a thousand per atomic call; returns how many went back to waiting.

        Ids that are gone or in another state are skipped.
        """
        retried = 0
        for start in range(0, len(job_ids), BATCH):
            codes = await self.call("retry", self.max_events, *job_ids[start : start + BATCH])
            retried += sum(1 for code in codes if int(code) == 0)
        return retried

    async def remove(self, job_id: str) -> None:
        """Delete a job that is not running."""
        code = int((await self.call("remove", job_id, self.max_events))[0])
        raise_for_code(code, job_id, "job is running; it can be removed once it finishes")

    async def clean(
        self,
        state: JobState,
        *,
        older_than_ms: int = 0,
        limit: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete jobs of `state` older than `older_than_ms` (all of them, or up to `limit`); returns how many went.

        Works in atomic batches of a thousand; `on_progress(deleted_so_far)` is called after each.
        """
        if state is JobState.ACTIVE:
            raise ValueError("active jobs cannot be cleaned; they are recovered by stall detection")
        # One cutoff for the whole run, so a long clean does not reach newer and newer jobs as it goes.
        cutoff = int(time.time() * 1000) - older_than_ms
        deleted, rank = 0, 0
        while rank >= 0 and (limit is None or deleted < limit):
            batch = BATCH if limit is None else min(BATCH, limit - deleted)
            n, rank = (int(x) for x in await self.call("clean", state.value, cutoff, batch, rank))
            deleted += n
            if on_progress is not None:
                on_progress(deleted)
        return deleted

    async def drain(self, *, include_delayed: bool = False) -> int:
        """Delete every waiting job (and delayed, if asked); running jobs go on. Returns how many went."""
        total = 0
        while True:
            n = int(await self.call("drain", BATCH, 1 if include_delayed else 0))
            total += n
            if n == 0:
                return total

    async def pause(self) -> None:
        """Stop all workers from starting jobs; running ones finish."""
        await self.call("pause", 1, self.max_events)

    async def resume(self) -> None:
        """Let workers start jobs again."""
        await self.call("pause", 0, self.max_events)

    async def events(self, count: int = 100) -> list[dict[str, str]]:
        """The newest events of the stream, newest first, each with its stream id as `id`."""
        entries = await self.redis.xrevrange(self.keys.key("events"), count=count)
        return [{"id": str(eid), **_str_map(fields)} for eid, fields in entries or []]

    async def obliterate(self) -> None:
        """Delete every key of the queue (tests and tear-down only)."""
        await self.redis.delete(*self.keys.all(), self.keys.calls())


def _add_results(pairs: Sequence[Any]) -> list[AddResult]:
    """add.lua's reply (id, created, id, created, ...) as results."""
    return [AddResult(str(pairs[i]), bool(int(pairs[i + 1]))) for i in range(0, len(pairs), 2)]


def _record_head(name: str, group: str, priority: int, opts: str, cost: int) -> str:
    """A new job's record as JSON, without its closing brace: add.lua appends id, seq, created_ms and state."""
    dumps = json.dumps
    cost_field = f',"cost":{cost}' if cost > 0 else ""
    return (
        f'{{"name":{dumps(name, ensure_ascii=False)},"group":{dumps(group, ensure_ascii=False)},'
        f'"priority":{priority},"attempts_made":0,"starts":0,"stalls":0,"opts":{opts}{cost_field}'
    )


def _opts_json(attempts: int, backoff: Backoff) -> str:
    return json.dumps({"attempts": attempts, "backoff": backoff.to_json()}, separators=(",", ":"))


def _str_map(raw: Any) -> dict[str, str]:
    """A hash reply as str -> str (the engine's clients decode replies; this keeps the types honest)."""
    return {str(k): str(v) for k, v in dict(raw or {}).items()}
