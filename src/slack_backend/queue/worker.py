"""Worker: fetch under the queue's limits, run jobs concurrently under renewed leases, finish or retry them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from redis.exceptions import BusyLoadingError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slack_backend.queue._fence import LeaseFence
from slack_backend.queue.connection import ConnectionWatch, RedisClient, blocking_twin
from slack_backend.queue.errors import (
    JobNotFoundError,
    LeaseLostError,
    RetryAfter,
    ScriptCode,
    StalledError,
    UnrecoverableError,
    raise_for_code,
)
from slack_backend.queue.events import EventName, Hook, Hooks, JobEvent
from slack_backend.queue.job import Backoff, BackoffStrategy, Job, dumps_compact
from slack_backend.queue.limits import QueueLimits
from slack_backend.queue.log_context import set_job_log_context
from slack_backend.queue.queue import Queue

log = structlog.get_logger("slack_backend.queue.worker")
T = TypeVar("T")

STATUS_STARTED, STATUS_EMPTY, STATUS_LIMITED, STATUS_PAUSED, STATUS_HELD, STATUS_CAPPED, STATUS_BUDGET = range(7)
# Started jobs and left nothing else startable (fetch.lua): the worker waits rather than fetch again to learn it.
STATUS_DRAINED = 7
STACKS_KEPT = 10
FINISHING_GRACE_S = 5.0
# Background loops end on the stop flag within a Redis round trip; past this they are cancelled as a safety net.
HOUSEKEEPING_STOP_S = 2.0
# A background loop that raised is restarted after this, doubling up to LOOP_RESTART_MAX_S while it keeps failing.
LOOP_RESTART_S = 0.05
LOOP_RESTART_MAX_S = 5.0
# Each RetryAfter counts at least this against the job's hold bound, so one that keeps asking to retry at once
# also ends.
MIN_COUNTED_HOLD_MS = 1000
# A blocking wait that has not answered this long after its own timeout has lost its link (a partition drops
# packets without a reset, and the socket would wait for ever): it is abandoned and the worker fetches anew.
BLOCKING_SLACK_S = 1.0
DEFAULT_MAX_RETRY_AFTER_MS = 15 * 60 * 1000
# Completions that land together go to Redis in one script call, up to this many.
ACK_BATCH = 100
# Finishing calls in flight at once. With two, Redis runs one batch while this process runs the other's jobs;
# each call also starts the next jobs on its own fetch lane (see _FetchLane).
ACK_LANES = 2
# A finishing call's outcome when Redis stayed away for the whole lease (the job will be recovered).
GAVE_UP = -100


class Processor(Protocol):
    """The job's work: return a JSON-serializable result, or raise (RetryAfter, UnrecoverableError, any)."""

    def __call__(self, job: Job, /) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class KeepJobs:
    """Retention of finished jobs: the newest `count` (None = all) and none older than `age_ms` (None = any)."""

    count: int | None = None
    age_ms: int | None = None

    def args(self) -> tuple[int, int]:
        return (-1 if self.count is None else self.count, self.age_ms or 0)


@dataclass
class WorkerStats:
    """Counters of what this worker did, for metrics; they only grow."""

    fetches: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    stalled_recovered: int = 0
    leases_lost: int = 0
    loop_restarts: int = 0
    rate_limited_waits: int = 0
    rate_limited_wait_ms: int = 0
    held_waits: int = 0
    budget_waits: int = 0
    redis_errors: int = 0


@dataclass
class _Ack:
    """A completion waiting for the next batched `complete` call; `done` receives its script code."""

    job: Job
    token: str
    result_json: str
    used: int
    done: asyncio.Future[int]


class _FetchLane:
    """One of the worker's fetch identities in Redis: the request id of its next fetch, kept after a fetch whose
    reply never came so the next fetch on this lane replays it (fetch_replay) instead of leaving those jobs leased
    to nobody. Lane n > 0 names itself in the id ("n:..."), and Redis keeps each lane's last fetch apart."""

    __slots__ = ("index", "prefix", "req", "seq")

    def __init__(self, index: int, seq: itertools.count[int]) -> None:
        self.index = index
        self.prefix = f"{index}:" if index else ""
        self.seq = seq
        self.req: str | None = None

    def field(self, worker_id: str) -> str:
        """The lane's field of the queue's `fetches` hash (fetch_field in the scripts names it the same way)."""
        return f"{worker_id}#{self.index}" if self.index else worker_id

    def next_req(self) -> str:
        if self.req is None:
            # Growing and fixed-width: a send abandoned here but retried by redis-py that lands after a newer
            # fetch is known in Redis as stale and starts nothing (see fetch_replay).
            self.req = f"{self.prefix}{next(self.seq):016d}"
        return self.req


@dataclass
class _Running:
    """One run of a job, known by its lease token: the same job may run again here while an old run's task
    still finishes its hooks, and each run's bookkeeping must stay its own."""

    job_id: str
    token: str
    task: asyncio.Task[object]
    # Set once the run is writing its outcome (complete / fail / release): from then on it is never cancelled,
    # so a shutdown cannot cut a finishing call in half and leave the job leased to nobody.
    finishing: bool = False
    # When this worker last cancelled the run for a lost or expired lease (monotonic s), or None.
    stopped_at: float | None = None


class Worker:
    """Runs jobs of one queue: `await worker.run()` until `await worker.close(timeout_s)`.

    Start limits (rate, caps, fairness) live in Redis and bind every worker of the queue; `limits`, when
    given, is written there at start. Concurrency is this worker's own.
    """

    def __init__(
        self,
        queue: Queue,
        processor: Processor,
        *,
        concurrency: int = 5,
        limits: QueueLimits | None = None,
        lease_ms: int = 30_000,
        stalled_interval_ms: int = 5_000,
        max_stalls: int = 1,
        keep_completed: KeepJobs | None = None,
        keep_failed: KeepJobs | None = None,
        backoff_strategy: BackoffStrategy | None = None,
        idle_block_s: float = 5.0,
        max_retry_after_ms: int | None = DEFAULT_MAX_RETRY_AFTER_MS,
        name: str | None = None,
    ) -> None:
        """A worker for `queue` running `processor`.

        Args:
            max_retry_after_ms: the most a job may be held by RetryAfter in total (each counts at least 1 s);
                past it the job fails with that reason. None: no bound.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if lease_ms < 100:
            raise ValueError("lease_ms must be >= 100")
        self.queue = queue
        self.processor = processor
        self.concurrency = concurrency
        self.limits = limits
        self.lease_ms = lease_ms
        self.stalled_interval_ms = stalled_interval_ms
        self.max_stalls = max_stalls
        self.keep_completed = keep_completed or KeepJobs(count=100)
        self.keep_failed = keep_failed or KeepJobs(count=500)
        self.backoff_strategy = backoff_strategy
        self.idle_block_s = idle_block_s
        self.max_retry_after_ms = max_retry_after_ms
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hooks = Hooks()
        self.stats = WorkerStats()
        self._running: dict[str, _Running] = {}
        self._fence = LeaseFence(lease_ms / 1000, self._lease_expired)
        # Set while the fetch loop blocks on the wake lists (see _wait_for_work); a poke ends the wait.
        self._blocked = False
        self._pokes: set[asyncio.Task[None]] = set()
        # The fetch loop's one wait: resolved when what it waits for happens (see _pause), without a task per wait.
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_for: Callable[[], bool] = _never
        # The fetch loop's fetch is in flight. It fetches alone: only when no lane's call fetches (_incoming is 0).
        self._loop_fetching = False
        seq = itertools.count(1)
        self._lanes = [_FetchLane(i, seq) for i in range(ACK_LANES)]
        # Runs past their processor, writing their outcome: they hold no slot any more.
        self._finishing = 0
        # Jobs the finishing calls in flight may start (above 0 while any of them fetches): their slots are taken
        # already, so the calls together never start more than the concurrency.
        self._incoming = 0
        self._senders_idle = ACK_LANES
        # The last fetch got all it asked for: more is probably waiting, so completions ask for the next jobs.
        self._backlog = False
        self._acks: list[_Ack] = []
        self._acks_waiting = asyncio.Event()
        self._closing = asyncio.Event()
        # Tells the background loops to end. They check it rather than rely on cancellation alone: on Python
        # 3.11 a cancel that lands as a redis-py send (wrapped in asyncio.wait_for) finishes is swallowed.
        self._stopping = asyncio.Event()
        self._closed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        # A worker retries Redis at least twice a second, so it picks up work within a second of an outage ending.
        self._watch = ConnectionWatch(f"worker {self.id}", cap_s=0.5)
        self._blocking: RedisClient | None = None
        self._shutdown_timeout_s: float | None = None
        self._log = log.bind(queue=queue.name, worker=self.id)

    # -- public ---------------------------------------------------------------------------------------------

    def on(self, name: EventName, hook: Hook) -> None:
        """Listen to an event: active, completed, failed, retrying, released, stalled, progress, error."""
        self.hooks.on(name, hook)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop run() runs on, from its task: on Python 3.11 each asyncio.get_running_loop() (and
        asyncio.create_task's) costs a getpid() system call, and a job took two of them."""
        assert self._loop_task is not None  # jobs are started, and complete, inside run()
        return self._loop_task.get_loop()

    async def run(self) -> None:
        """Fetch and run jobs until `close()`; survives Redis outages (logs, backs off, goes on)."""
        if self._loop_task is not None:
            raise RuntimeError("worker is already running")
        self._loop_task = asyncio.current_task()
        self._blocking = _blocking_client(self.queue.redis)
        background = [
            asyncio.create_task(self._supervised("leases", self._renew_leases_loop), name=f"{self.id} leases"),
            asyncio.create_task(self._supervised("stalled", self._stalled_loop), name=f"{self.id} stalled"),
        ]
        background += [
            asyncio.create_task(
                self._supervised(f"acks {n}", functools.partial(self._ack_sender, lane)), name=f"{self.id} acks {n}"
            )
            for n, lane in enumerate(self._lanes)
        ]
        try:
            await self._configure()
            await self._fetch_loop()
            await self._finish_in_flight()
        finally:
            await self._stop_housekeeping(background)
            await self._forget_self()
            await self._blocking.aclose()  # a twin owns its pool (from_pool), so this closes it too
            self._fence.close()
            self._closed.set()
            self._log.info("worker closed")

    async def _stop_housekeeping(self, tasks: list[asyncio.Task[None]]) -> None:
        """Tell the background loops to stop and wait for them; cancel (once) any still going after a while.

        The loops end on `_stopping`, not on a cancel: Python 3.11's `asyncio.wait_for`, which redis-py wraps
        around every send when a socket timeout is set, swallows a cancel that lands just as the send finishes
        (CPython gh-86296), and a loop cancelled there went on for ever.
        """
        self._stopping.set()
        self._acks_waiting.set()
        _done, pending = await asyncio.wait(tasks, timeout=HOUSEKEEPING_STOP_S)
        if not pending:
            return
        self._log.error("background loop did not stop; cancelling it", loops=sorted(t.get_name() for t in pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=HOUSEKEEPING_STOP_S)

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop until the stop flag; if it raises, log it by name and start it again.

        A worker that looks alive must be doing its work: a lease loop or ack loop that died silently would
        leave jobs renewed for ever, or completions waiting for ever.
        """
        delay_s = LOOP_RESTART_S
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                await loop()
                return
            except Exception:
                self.stats.loop_restarts += 1
                self._log.exception("background loop failed; restarting it", loop=name, restart_in_s=delay_s)
            if time.monotonic() - began > 10 * LOOP_RESTART_MAX_S:
                delay_s = LOOP_RESTART_S  # it ran well for a while: a new failure starts the backoff afresh
            await self._sleep_unless_stopping(delay_s)
            delay_s = min(LOOP_RESTART_MAX_S, delay_s * 2)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: it never swallows a cancel on 3.11.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop fetching, let running jobs finish for up to `timeout_s`, then release the rest to waiting.

        Released jobs keep their attempt count and are at the head of their group. Idempotent.
        """
        self._shutdown_timeout_s = timeout_s
        self._closing.set()
        self._nudge(force=True)
        self._poke()
        if self._loop_task is not None:
            await self._closed.wait()

    # -- fetching -------------------------------------------------------------------------------------------

    async def _configure(self) -> None:
        while not self._closing.is_set():
            try:
                # Writing the limits (or nothing) also refreshes what the scripts keep about group settings.
                if self.limits is not None:
                    await self.queue.set_limits(self.limits)
                else:
                    await self.queue.refresh()
                await self._heartbeat()
                self._watch.ready()
                self._log.info("worker ready", concurrency=self.concurrency)
                return
            except RedisError as exc:
                await self._redis_failed(exc)

    async def _fetch_loop(self) -> None:
        # The wait_ms of a fetch that started jobs and drained the queue: the next step is a wait, not a fetch.
        drained: int | None = None
        while not self._closing.is_set():
            if not self._may_fetch():
                # The drained answer is as old as the pause will be: its wait_ms (a delayed job falling due) would
                # be late by then, so the next step after the pause is a fetch.
                drained = None
                await self._pause(None, self._may_fetch)
                continue
            if drained is not None:
                drained = await self._idle(STATUS_EMPTY, drained)
                continue
            free = self.concurrency - len(self._running)
            lane = self._lane_for_loop()
            self._loop_fetching = True
            try:
                # Never cancelled half-way: a fetch that ran in Redis must be seen here, or its jobs would
                # sit leased to nobody until the stall check.
                fetch = self.queue.call("fetch", self.id, self.lease_ms, free, lane.next_req())
                reply = await self._bounded(asyncio.shield(fetch))
            except RedisError as exc:
                await self._redis_failed(exc)
                continue
            finally:
                self._loop_fetching = False
            self._watch.ready()
            status, wait_ms = int(reply[0]), int(reply[1])
            started = self._fetched(free, reply, lane)
            if started:
                drained = _drained_wait_ms(reply)
                continue
            drained = await self._idle(status, wait_ms)

    async def _bounded(self, call: Awaitable[T], timeout_s: float | None = None) -> T:
        """Await a Redis call for at most `timeout_s` (default: a third of the lease); past it, a Redis timeout.

        A partition drops packets without a reset: a call on such a link would wait for the socket timeout or
        for ever. Abandoning it is safe, since every state-changing script answers a re-send as the first call.
        """
        limit_s = timeout_s if timeout_s is not None else max(1.0, self.lease_ms / 3000)
        try:
            async with asyncio.timeout(limit_s):
                return await call
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no reply from Redis within {limit_s:g} s") from exc

    def _lane_for_loop(self) -> _FetchLane:
        """The lane the fetch loop fetches on (no other fetch is in flight then): one whose last fetch got no
        reply, so its jobs come back now, or else lane 0."""
        for lane in self._lanes:
            if lane.req is not None:
                return lane
        return self._lanes[0]

    def _fetched(self, asked: int, reply: list[Any], lane: _FetchLane) -> int:
        """Start the jobs of a fetch reply ({status, wait_ms, id, rec, data, token, ...}); returns how many."""
        lane.req = None  # answered: the next fetch on this lane is a new request
        self.stats.fetches += 1
        started = self._start_jobs(reply[2:])
        self._backlog = int(reply[0]) == STATUS_STARTED and started >= asked
        return started

    def _start_jobs(self, flat: list[Any]) -> int:
        count = 0
        loop = self._event_loop()
        granted_at = time.monotonic()
        for i in range(0, len(flat), 4):
            job_id, record, data, token = str(flat[i]), flat[i + 1], flat[i + 2], str(flat[i + 3])
            run: Coroutine[Any, Any, object]
            try:
                job = Job.from_record(str(record), None if data is None else str(data))
            except (ValueError, KeyError, TypeError) as exc:
                run = self._fail_unreadable(job_id, token, f"the job's record cannot be read: {exc!r}")
            else:
                if self._closing.is_set():
                    # Fetched as close() began: give it straight back rather than start new work.
                    run = self._release(job, token, 0, False, "worker closing")
                else:
                    run = self._run_job(job, token)
            task = loop.create_task(run, name=f"job {job_id}")
            self._running[token] = _Running(job_id, token, task)
            self._fence.granted(token, granted_at)
            self.stats.started += 1
            task.add_done_callback(self._job_done_callback(token))
            count += 1
        return count

    def _job_done_callback(self, token: str) -> Callable[[asyncio.Task[object]], None]:
        def done(_task: asyncio.Task[object]) -> None:
            held = self._running.pop(token, None)
            if held is not None and held.finishing:
                self._finishing -= 1
            self._fence.drop(token)
            self._nudge()

        return done

    async def _idle(self, status: int, wait_ms: int) -> int | None:
        """Sleep exactly until a start may be allowed; block on the wake list when an event can end the wait.

        A freed slot under the global cap and budget given back by a settlement push a wake token, as new
        work does, so those waits block on the wake list (up to their deadline) instead of polling. Returns the
        wait_ms of a fetch made at the wait's end that started jobs and drained the queue (None: fetch next).
        """
        if status in (STATUS_LIMITED, STATUS_HELD):
            if status == STATUS_LIMITED:
                self.stats.rate_limited_waits += 1
                self.stats.rate_limited_wait_ms += max(wait_ms, 1)
            else:
                self.stats.held_waits += 1
            await self._pause(max(wait_ms, 1) / 1000, _never)
            return None
        if status == STATUS_BUDGET:
            self.stats.budget_waits += 1
            wait_ms = max(wait_ms, 1)
        timeout_s = self.idle_block_s if wait_ms < 0 else min(self.idle_block_s, wait_ms / 1000)
        if timeout_s <= 0:
            return None
        return await self._wait_for_work(timeout_s)

    async def _wait_for_work(self, timeout_s: float) -> int | None:
        """Block on the wake lists for up to `timeout_s`, with a fetch pipelined behind the wait.

        Redis runs the fetch the moment the wait ends (a wake token, or a poke of this worker's own list), so a
        job added to an idle queue starts after one hop, as with a plain BLPOP queue. Redis checks blocking
        timeouts only about ten times a second, so the exact deadline (a delayed job falling due) is a timer
        here that pokes the worker's own list; close() pokes it too.
        """
        if not self._may_fetch() or self._closing.is_set() or self._blocking is None:
            return None
        free = self.concurrency - len(self._running)
        timer = asyncio.get_running_loop().call_later(timeout_s, self._poke)
        keys = [self.queue.keys.key("wake"), self._own_wake_key]
        lane = self._lane_for_loop()
        self._loop_fetching = self._blocked = True
        try:
            # The BLPOP's own timeout is only a safety net behind the timer; the client-side bound is the net
            # behind that, for a link that died silently.
            wait = self.queue.call_after_blpop(
                self._blocking, keys, timeout_s + 1, "fetch", self.id, self.lease_ms, free, lane.next_req()
            )
            reply = await self._bounded(wait, timeout_s + 1 + BLOCKING_SLACK_S)
        except RedisError as exc:
            await self._redis_failed(exc)
            return None
        finally:
            timer.cancel()
            self._loop_fetching = self._blocked = False
        self._watch.ready()
        if reply is None:
            return None
        self._fetched(free, reply, lane)
        return _drained_wait_ms(reply)

    @property
    def _own_wake_key(self) -> str:
        return self.queue.keys.worker_wake(self.id)

    def _poke(self) -> None:
        """End a blocking wait of this worker now (its deadline came, or close began)."""
        if not self._blocked:
            return
        task = asyncio.ensure_future(self._push_own_wake())
        self._pokes.add(task)
        task.add_done_callback(self._pokes.discard)

    async def _push_own_wake(self) -> None:
        with contextlib.suppress(RedisError):
            async with self.queue.redis.pipeline(transaction=False) as pipe:
                # Expires, so the list of a worker that dies blocked does not outlive it for long.
                pipe.lpush(self._own_wake_key, "1")
                pipe.pexpire(self._own_wake_key, 60_000)
                await pipe.execute()

    def _may_fetch(self) -> bool:
        return len(self._running) < self.concurrency and not self._loop_fetching and self._incoming == 0

    async def _pause(self, timeout_s: float | None, until: Callable[[], bool]) -> None:
        """Wait until `until()` holds when nudged, close begins, or `timeout_s` passes (None: no limit)."""
        if until() or self._closing.is_set():
            return
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._waiting_for = until
        timer = None if timeout_s is None else loop.call_later(timeout_s, self._nudge, True)
        try:
            await self._waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self._waiting_for = _never

    def _nudge(self, force: bool = False) -> None:
        """Something the fetch loop may be waiting for happened; resume it if so (or always, with `force`)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (force or self._waiting_for()):
            waiter.set_result(None)

    # -- running --------------------------------------------------------------------------------------------

    async def _run_job(self, job: Job, token: str) -> None:
        # Every log line written while the job runs (ours, the processor's, libraries') carries the job's context
        # (merged by log_context.merge_job_context when a line is written); each job is its own task, so the
        # context ends with it.
        set_job_log_context(job.id, self.queue.name, job.group, job.attempts_made + 1)
        try:
            await self._run_bound(job, token)
        finally:
            # Progress is reported only while the job runs (Job.update_progress). And the reporter's closure holds
            # the job that holds it: left in place, every finished job would be a reference cycle, freed only when
            # the garbage collector next walks the heap.
            job._reporter = None

    async def _run_bound(self, job: Job, token: str) -> None:
        job._reporter = lambda value: self._report_progress(job, token, value)
        bound = self._log
        try:
            # Inside the try: a cancel during the `active` hook (shutdown, lost lease) releases the job too.
            if "active" in self.hooks:
                await self.hooks.emit(JobEvent("active", job))
            if job.data_error is not None:
                await self._fail(job, token, UnrecoverableError(job.data_error), bound)
                return
            result = await self.processor(job)
        except asyncio.CancelledError:
            await self._release(job, token, 0, False, "worker shut down before the job finished")
            return
        except RetryAfter as exc:
            await self._retry_after(job, token, exc, bound)
            return
        except Exception as exc:
            await self._fail(job, token, exc, bound)
            return
        try:
            result_json = "null" if result is None else dumps_compact(result)
        except (TypeError, ValueError) as exc:
            await self._fail(job, token, UnrecoverableError(f"result is not JSON-serializable: {exc}"), bound)
            return
        used = -1 if job.cost_used is None else max(0, int(job.cost_used))
        if not await self._complete(job, token, result_json, used):
            return
        job.attempts_made += 1
        job.result = result
        self.stats.completed += 1
        bound.info("job completed", **_figures(job))
        if "completed" in self.hooks:
            await self.hooks.emit(JobEvent("completed", job, result=result))

    async def _fail(self, job: Job, token: str, exc: BaseException, bound: Any) -> None:
        attempts_made = job.attempts_made + 1
        unrecoverable = isinstance(exc, UnrecoverableError)
        final = unrecoverable or attempts_made >= job.attempts
        delay_ms = -1 if final else self._backoff_ms(job, attempts_made, exc)
        stack = "".join(traceback.format_exception(exc))
        count, age_ms = self.keep_failed.args()
        reason = str(exc) or type(exc).__name__
        reply = await self._finish_call(
            "fail", token, job.id, token, reason, stack, delay_ms, count, age_ms, _ev(self), STACKS_KEPT, job=job
        )
        if reply is None:
            return
        job.attempts_made = attempts_made
        job.failed_reason = reason
        if final:
            self.stats.failed += 1
            bound.warning("job failed", reason=reason, unrecoverable=unrecoverable, **_figures(job))
            await self.hooks.emit(JobEvent("failed", job, error=exc, final=True))
        else:
            self.stats.retried += 1
            bound.info("job will retry", reason=reason, delay_ms=delay_ms, **_figures(job))
            await self.hooks.emit(JobEvent("retrying", job, error=exc, delay_ms=delay_ms))

    def _backoff_ms(self, job: Job, attempts_made: int, exc: BaseException) -> int:
        if self.backoff_strategy is not None:
            return max(0, int(self.backoff_strategy(attempts_made, exc)))
        return (job.backoff or Backoff()).delay_for(attempts_made)

    async def _retry_after(self, job: Job, token: str, exc: RetryAfter, bound: Any) -> None:
        """Release the job for the delay RetryAfter asked, or fail it once its holds pass the bound."""
        delay_ms = int(exc.delay_s * 1000)
        counted_ms = max(delay_ms, MIN_COUNTED_HOLD_MS)
        if await self._release(job, token, delay_ms, exc.hold_queue, str(exc), counted_ms):
            return
        limit_s = (self.max_retry_after_ms or 0) / 1000
        reason = f"held by RetryAfter for more than {limit_s:g} s in total (last: {exc})"
        await self._fail(job, token, UnrecoverableError(reason), bound)

    async def _release(self, job: Job, token: str, delay_ms: int, hold: bool, reason: str, counted_ms: int = 0) -> bool:
        """Give the job back; False only when it is over its RetryAfter bound (nothing changed; still leased)."""
        bound_ms = self.max_retry_after_ms or 0
        reply = await self._finish_call(
            "release",
            token,
            job.id,
            token,
            delay_ms,
            1 if hold else 0,
            reason,
            _ev(self),
            counted_ms,
            bound_ms,
            job=job,
        )
        if reply is not None and int(reply[0]) == ScriptCode.OVER_HOLD_BOUND:
            return False
        if reply is None:
            return True
        self.stats.released += 1
        self._log.info("job released", job_id=job.id, delay_ms=delay_ms, hold_queue=hold, reason=reason)
        await self.hooks.emit(JobEvent("released", job, delay_ms=delay_ms))
        return True

    async def _fail_unreadable(self, job_id: str, token: str, reason: str) -> None:
        """Fail at once a fetched job whose record this worker cannot read; retrying cannot help."""
        self._log.error("fetched job's record cannot be read; failing it", job_id=job_id, reason=reason)
        count, age_ms = self.keep_failed.args()
        error = UnrecoverableError(reason)
        reply = await self._finish_call(
            "fail", token, job_id, token, reason, "", -1, count, age_ms, _ev(self), STACKS_KEPT
        )
        if reply is None:
            return
        self.stats.failed += 1
        await self.hooks.emit(JobEvent("failed", error=error, final=True, job_id=job_id))

    async def _complete(self, job: Job, token: str, result_json: str, used: int) -> bool:
        """Hand the completion to the ack senders and wait for its outcome; True when it was written."""
        self._mark_finishing(token)
        done: asyncio.Future[int] = self._event_loop().create_future()
        self._acks.append(_Ack(job, token, result_json, used, done))
        self._acks_waiting.set()
        return await self._finish_outcome("complete", job.id, await done, job)

    async def _ack_sender(self, lane: _FetchLane) -> None:
        """Send waiting completions, a batch per `complete` call; the first one of a batch is never delayed.

        Completions that arrive while both senders' calls are in flight wait and go together in the next call
        ("group commit"): at a high rate a call carries many jobs, when idle each job goes alone at once. A sender
        that finds the other idle takes its share only, so the two calls settle into taking turns: Redis runs one
        while this process runs the jobs the other started. Ends on the stop flag once no completion waits.
        """
        count, age_ms = self.keep_completed.args()
        while not (self._stopping.is_set() and not self._acks):
            if not self._acks:
                self._acks_waiting.clear()
                await self._acks_waiting.wait()
                continue
            size = min(ACK_BATCH, -(-len(self._acks) // self._senders_idle))
            batch, self._acks = self._acks[:size], self._acks[size:]
            self._senders_idle -= 1
            try:
                await self._send_acks(batch, count, age_ms, lane)
            finally:
                self._senders_idle += 1
                # Whatever happened, no run waits for ever: an unanswered one gives up (and is recovered).
                _give_up_unanswered(batch)
                # Nor are the runs kept while this sender waits for the next: each holds its job, and a job its data.
                batch.clear()

    async def _send_acks(self, batch: list[_Ack], count: int, age_ms: int, lane: _FetchLane) -> None:
        # While a backlog lasts, the same call starts the next jobs (as BullMQ's moveToFinished does):
        # one round trip per batch instead of two. When idle, completions go alone.
        want = 0
        if self._backlog and not self._loop_fetching and not self._closing.is_set():
            want = max(0, self.concurrency - len(self._running) + self._finishing - self._incoming)
            if self._acks:
                # The completions left go in the other lane's call, which starts their successors.
                want = min(want, len(batch))
        req = lane.next_req() if want > 0 else ""
        args: list[str | int] = [count, age_ms, _ev(self), self.id, self.lease_ms, want, req]
        for ack in batch:
            args += [ack.job.id, ack.token, ack.result_json, ack.used]
        self._incoming += want
        try:
            reply = await self._call_riding_outages("complete", args)
        finally:
            self._incoming -= want
        codes = [GAVE_UP] * len(batch) if reply is None else [int(c) for c in reply[1 : 1 + len(batch)]]
        for ack, code in zip(batch, codes, strict=True):
            if not ack.done.done():
                ack.done.set_result(code)
        if want > 0:
            if reply is not None and self._fetched(want, reply[1 + len(batch) :], lane):
                # One loop turn for the jobs just started: those done by then go in this lane's next call with
                # the completions already waiting, rather than a third batch being formed behind both lanes.
                await asyncio.sleep(0)
            self._nudge()

    async def _finish_call(
        self, script: str, token: str, job_id: str, *args: str | int | float, job: Job | None = None
    ) -> list[Any] | None:
        """Run a finishing script for one run; None when the lease was lost or Redis stayed away.

        A release over the RetryAfter bound comes back as is: nothing changed, and the caller fails the job.
        """
        self._mark_finishing(token)
        reply = await self._call_riding_outages(script, (job_id, *args))
        if reply is None:
            await self._finish_outcome(script, job_id, GAVE_UP, job)
            return None
        code = int(reply[0])
        if code == ScriptCode.OVER_HOLD_BOUND:
            return reply
        return reply if await self._finish_outcome(script, job_id, code, job) else None

    def _mark_finishing(self, token: str) -> None:
        held = self._running.get(token)
        if held is not None and not held.finishing:
            held.finishing = True
            self._finishing += 1

    async def _call_riding_outages(self, script: str, args: Sequence[str | int | float]) -> list[Any] | None:
        """Run a finishing script, retrying through a Redis outage for as long as a lease lasts; None: gave up.

        Safe to repeat: a finishing script re-sent after a lost reply answers as the first call did. A
        deterministic error (a script bug) is not ridden out: it is logged once and the job left to recovery.
        """
        deadline = time.monotonic() + self.lease_ms / 1000
        while True:
            try:
                reply = list(await self._bounded(self.queue.call(script, *args)))
                self._watch.ready()
                return reply
            except RedisError as exc:
                if not _transient(exc):
                    self._log.error(
                        "finishing script failed; the job will be recovered", action=script, error=repr(exc)
                    )
                    return None
                if time.monotonic() >= deadline:
                    return None
                await self._redis_failed(exc)

    async def _finish_outcome(self, script: str, job_id: str, code: int, job: Job | None) -> bool:
        """Log and report a finishing call that did not take effect; True when it did."""
        if code == GAVE_UP:
            self._log.error("gave up finishing job; it will be recovered", job_id=job_id, action=script)
            error = RedisError("Redis unreachable while finishing")
            await self.hooks.emit(JobEvent("error", job, error=error, job_id=job_id))
            return False
        try:
            raise_for_code(code, job_id)
        except LeaseLostError as exc:
            self.stats.leases_lost += 1
            self._log.warning("lease lost; result discarded", job_id=job_id, action=script)
            await self.hooks.emit(JobEvent("error", job, error=exc, job_id=job_id))
            return False
        except JobNotFoundError as exc:
            self._log.warning("job removed while it ran; outcome discarded", job_id=job_id, action=script)
            await self.hooks.emit(JobEvent("error", job, error=exc, job_id=job_id))
            return False
        return True

    async def _report_progress(self, job: Job, token: str, value: Any) -> None:
        payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        code = int((await self._bounded(self.queue.call("progress", job.id, token, payload, _ev(self))))[0])
        raise_for_code(code, job.id)
        job.progress = value
        await self.hooks.emit(JobEvent("progress", job, progress=value))

    # -- housekeeping ---------------------------------------------------------------------------------------

    async def _renew_leases_loop(self) -> None:
        # Renews first, then sleeps: a loop restarted after a failure renews at once, before leases run out.
        interval_s = self.lease_ms / 3000
        while not self._stopping.is_set():
            try:
                await self._heartbeat()
                pairs: list[str] = []
                for token, held in list(self._running.items()):
                    pairs += [held.job_id, token]
                if pairs:
                    sent_at = time.monotonic()
                    lost = [str(t) for t in await self._bounded(self.queue.call("extend", self.lease_ms, *pairs))]
                    self._fence.renewed(set(pairs[1::2]) - set(lost), sent_at)
                    for token in lost:
                        # A run that finished while the renewal was under way gave its lease up itself.
                        running = self._running.get(str(token))
                        if running is not None:
                            # Another worker owns it now: stop this run rather than duplicate its work. A cancel
                            # lost in a Redis call is sent again at the next renewal, which finds it lost again.
                            self._stop_run(running, "lease lost while running; stopping this run")
                self._watch.ready()
            except RedisError as exc:
                await self._redis_failed(exc)
            await self._sleep_unless_stopping(interval_s)

    def _lease_expired(self, token: str) -> None:
        """No renewal reached Redis for a whole lease (a partition, a stall): stop the run before its job may be
        handed to another worker. Its release is then refused by fencing, or gives the job back if nobody took it."""
        running = self._running.get(token)
        if running is not None:
            self._stop_run(running, "lease not renewed in time; stopping this run")

    def _stop_run(self, running: _Running, message: str) -> None:
        """Cancel a run whose lease is gone, once: a second cancel soon after the first (the lease's timer and the
        renewal that sees the loss, together) would cut short the processor's own clean-up."""
        now = time.monotonic()
        if running.finishing or (running.stopped_at is not None and now - running.stopped_at < self.lease_ms / 3000):
            return
        if running.stopped_at is None:
            self._log.warning(message, job_id=running.job_id)
            self.stats.leases_lost += 1
        running.stopped_at = now
        running.task.cancel()

    async def _stalled_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                count, age_ms = self.keep_failed.args()
                flat = await self._bounded(self.queue.call("stalled", self.max_stalls, count, age_ms, _ev(self)))
                for i in range(0, len(flat), 4):
                    job_id, outcome = str(flat[i]), str(flat[i + 1])
                    self.stats.stalled_recovered += 1
                    self._log.warning("stalled job recovered", job_id=job_id, outcome=outcome)
                    final = outcome == "failed"
                    await self.hooks.emit(JobEvent("stalled", job_id=job_id, final=final))
                    if final:
                        await self._stall_failed(job_id, str(flat[i + 2]), str(flat[i + 3]))
                self._watch.ready()
            except RedisError as exc:
                await self._redis_failed(exc)
            await self._sleep_unless_stopping(self.stalled_interval_ms / 1000)

    async def _stall_failed(self, job_id: str, record: str, data: str) -> None:
        """Fire `failed` for a job the stall limit failed: once, here, on the worker whose check failed it."""
        job: Job | None = None
        reason = "job stalled too often"
        try:
            job = Job.from_record(record, data or None)
            reason = job.failed_reason or reason
        except (ValueError, KeyError, TypeError) as exc:
            self._log.error("stall-failed job's record cannot be read", job_id=job_id, error=repr(exc))
        self.stats.failed += 1
        await self.hooks.emit(JobEvent("failed", job, error=StalledError(job_id, reason), final=True, job_id=job_id))

    async def _heartbeat(self) -> None:
        beat = {
            "last_seen_ms": int(time.time() * 1000),
            "running": len(self._running),
            "concurrency": self.concurrency,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        await self._bounded(self.queue.redis.hset(self.queue.keys.key("workers"), self.id, json.dumps(beat)))

    async def _forget_self(self) -> None:
        with contextlib.suppress(RedisError):
            await self.queue.redis.hdel(self.queue.keys.key("workers"), self.id)
            fields = [lane.field(self.id) for lane in self._lanes]
            await self.queue.redis.hdel(self.queue.keys.key("fetches"), *fields)
            await self.queue.redis.delete(self._own_wake_key)

    async def _redis_failed(self, exc: RedisError) -> None:
        self.stats.redis_errors += 1
        await self.hooks.emit(JobEvent("error", error=exc))
        await self._watch.failed(exc)

    async def _finish_in_flight(self) -> None:
        """Let running jobs finish until the shutdown timeout, then release the rest; return when none is left.

        Runs keep appearing while this waits (a release started by a fetch that returned as close began), so it
        waits for whatever is running, again and again, until nothing is.
        """
        loop = asyncio.get_running_loop()
        timeout_s = self._shutdown_timeout_s
        deadline = None if timeout_s is None else loop.time() + timeout_s
        if self._running:
            self._log.info("waiting for running jobs", count=len(self._running), timeout_s=timeout_s)
        if await self._wait_running(deadline):
            return
        unfinished = [r.task for r in self._running.values() if not r.task.done() and not r.finishing]
        for task in unfinished:
            task.cancel()
        self._log.info("releasing unfinished jobs", count=len(unfinished))
        # Released and finishing runs get a few more seconds to write their outcome.
        if await self._wait_running(loop.time() + FINISHING_GRACE_S):
            return
        stuck = [r.task for r in self._running.values() if not r.task.done()]
        for task in stuck:
            task.cancel()
        await asyncio.wait(stuck)

    async def _wait_running(self, deadline: float | None) -> bool:
        """Wait until no run is left (True) or the deadline (loop time; None: none) passes (False)."""
        loop = asyncio.get_running_loop()
        while True:
            tasks = [r.task for r in self._running.values() if not r.task.done()]
            if not tasks:
                return True
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(tasks, timeout=remaining)


def _drained_wait_ms(reply: list[Any]) -> int | None:
    """A fetch reply's wait_ms when it started jobs and drained the queue (status 7), else None: fetch next."""
    return int(reply[1]) if int(reply[0]) == STATUS_DRAINED else None


def _never() -> bool:
    return False


# Replies of a Redis that is there but not ready (loading, busy with a script, out of memory, a replica during
# failover): worth waiting out, like a dropped connection. Any other error reply is deterministic.
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


def _transient(exc: RedisError) -> bool:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | BusyLoadingError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


def _give_up_unanswered(batch: list[_Ack]) -> None:
    """Answer GAVE_UP to each run of `batch` still waiting. A function of its own so that its loop variable ends
    with it: in the ack sender's loop, `ack` would keep the last run (and its job) alive while the sender waits."""
    for ack in batch:
        if not ack.done.done():
            ack.done.set_result(GAVE_UP)


def _figures(job: Job) -> dict[str, int]:
    """A finished run's figures for its one log line: wait (enqueue to start) and run (start to now), in ms."""
    started_ms = job.processed_ms or 0
    return {"wait_ms": max(0, started_ms - job.created_ms), "run_ms": int(time.time() * 1000) - started_ms}


def _ev(worker: Worker) -> int:
    return worker.queue.max_events


def _blocking_client(client: RedisClient) -> RedisClient:
    """A second client to the same Redis for blocking waits (no short socket timeout, its own small pool).

    A Sentinel client's twin follows the master too; a Cluster client's twin finds the queue's shard itself.
    """
    return blocking_twin(client)
