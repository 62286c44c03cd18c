"""Worker: fetch under the queue's limits, run jobs concurrently under renewed leases, finish or retry them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

from slack_backend.queue.connection import ConnectionWatch
from slack_backend.queue.errors import (
    JobNotFoundError,
    LeaseLostError,
    RetryAfter,
    UnrecoverableError,
    raise_for_code,
)
from slack_backend.queue.events import EventName, Hook, Hooks, JobEvent
from slack_backend.queue.job import Backoff, BackoffStrategy, Job
from slack_backend.queue.limits import QueueLimits
from slack_backend.queue.queue import Queue

log = structlog.get_logger("slack_backend.queue.worker")

STATUS_STARTED, STATUS_EMPTY, STATUS_LIMITED, STATUS_PAUSED, STATUS_HELD, STATUS_CAPPED, STATUS_BUDGET = range(7)
STACKS_KEPT = 10
FINISHING_GRACE_S = 5.0
HOUSEKEEPING_STOP_S = 2.0
HOUSEKEEPING_CANCELS = 3
# Completions that land together go to Redis in one script call, up to this many.
ACK_BATCH = 100
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


@dataclass
class _Running:
    job: Job
    token: str
    task: asyncio.Task[None]
    # Set once the run is writing its outcome (complete / fail / release): from then on it is never cancelled,
    # so a shutdown cannot cut a finishing call in half and leave the job leased to nobody.
    finishing: bool = False


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
        name: str | None = None,
    ) -> None:
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
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hooks = Hooks()
        self.stats = WorkerStats()
        self._running: dict[str, _Running] = {}
        # Set while the fetch loop blocks on the wake lists (see _wait_for_work); a poke ends the wait.
        self._blocked = False
        self._pokes: set[asyncio.Task[None]] = set()
        # The fetch loop's one wait: resolved when what it waits for happens (see _pause), without a task per wait.
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_for: Callable[[], bool] = _never
        # One fetch at a time, by the fetch loop or riding on a batch of completions (see _ack_loop).
        self._fetch_busy = False
        # The last fetch got all it asked for: more is probably waiting, so completions ask for the next jobs.
        self._backlog = False
        self._acks: list[_Ack] = []
        self._acks_waiting = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        # A worker retries Redis at least twice a second, so it picks up work within a second of an outage ending.
        self._watch = ConnectionWatch(f"worker {self.id}", cap_s=0.5)
        self._blocking: Redis | None = None
        self._shutdown_timeout_s: float | None = None
        self._log = log.bind(queue=queue.name, worker=self.id)

    # -- public ---------------------------------------------------------------------------------------------

    def on(self, name: EventName, hook: Hook) -> None:
        """Listen to an event: active, completed, failed, retrying, released, stalled, progress, error."""
        self.hooks.on(name, hook)

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def run(self) -> None:
        """Fetch and run jobs until `close()`; survives Redis outages (logs, backs off, goes on)."""
        if self._loop_task is not None:
            raise RuntimeError("worker is already running")
        self._loop_task = asyncio.current_task()
        self._blocking = _blocking_client(self.queue.redis)
        background = [
            asyncio.create_task(self._renew_leases_loop(), name=f"{self.id} leases"),
            asyncio.create_task(self._stalled_loop(), name=f"{self.id} stalled"),
            asyncio.create_task(self._ack_loop(), name=f"{self.id} acks"),
        ]
        try:
            await self._configure()
            await self._fetch_loop()
            await self._finish_in_flight()
        finally:
            await self._stop_housekeeping(background)
            await self._forget_self()
            await self._blocking.aclose(close_connection_pool=True)
            self._closed.set()
            self._log.info("worker closed")

    async def _stop_housekeeping(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the background loops and wait for them, cancelling again any that go on.

        Idle shutdowns under load hung here about once in 40 (tests/faults/test_sigterm.py): one loop went on
        after its cancel. Which one, and why, was not found; it is logged by name when it happens, cancelled
        again (at most HOUSEKEEPING_CANCELS times), and close goes on either way.
        """
        pending = set(tasks)
        for attempt in range(1, HOUSEKEEPING_CANCELS + 1):
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=HOUSEKEEPING_STOP_S)
            if not pending:
                return
            stuck = sorted(t.get_name() for t in pending)
            self._log.warning("housekeeping task went on after cancel", tasks=stuck, attempt=attempt)

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
        while not self._closing.is_set():
            if not self._may_fetch():
                await self._pause(None, self._may_fetch)
                continue
            free = self.concurrency - len(self._running)
            self._fetch_busy = True
            try:
                # Never cancelled half-way: a fetch that ran in Redis must be seen here, or its jobs would
                # sit leased to nobody until the stall check.
                reply = await asyncio.shield(self.queue.call("fetch", self.id, self.lease_ms, free))
            except RedisError as exc:
                await self._redis_failed(exc)
                continue
            finally:
                self._fetch_busy = False
            self._watch.ready()
            status, wait_ms = int(reply[0]), int(reply[1])
            started = self._fetched(free, reply)
            if started:
                continue
            await self._idle(status, wait_ms)

    def _fetched(self, asked: int, reply: list[Any]) -> int:
        """Start the jobs of a fetch reply ({status, wait_ms, id, rec, data, token, ...}); returns how many."""
        self.stats.fetches += 1
        started = self._start_jobs(reply[2:])
        self._backlog = int(reply[0]) == STATUS_STARTED and started >= asked
        return started

    def _start_jobs(self, flat: list[Any]) -> int:
        count = 0
        for i in range(0, len(flat), 4):
            job_id, record, data, token = flat[i], flat[i + 1], flat[i + 2], flat[i + 3]
            job = Job.from_record(str(record), None if data is None else str(data))
            if self._closing.is_set():
                # Fetched as close() began: give it straight back rather than start new work.
                task = asyncio.create_task(self._release(job, str(token), 0, False, "worker closing"))
            else:
                task = asyncio.create_task(self._run_job(job, str(token)), name=f"job {job_id}")
            self._running[str(job_id)] = _Running(job, str(token), task)
            self.stats.started += 1
            task.add_done_callback(self._job_done_callback(str(job_id)))
            count += 1
        return count

    def _job_done_callback(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop(job_id, None)
            self._nudge()

        return done

    async def _idle(self, status: int, wait_ms: int) -> None:
        """Sleep exactly until a start may be allowed; block on the wake list when only new work can help."""
        if status in (STATUS_LIMITED, STATUS_HELD, STATUS_BUDGET):
            if status == STATUS_LIMITED:
                self.stats.rate_limited_waits += 1
                self.stats.rate_limited_wait_ms += max(wait_ms, 1)
            elif status == STATUS_HELD:
                self.stats.held_waits += 1
            else:
                self.stats.budget_waits += 1
            await self._pause(max(wait_ms, 1) / 1000, _never)
            return
        timeout_s = self.idle_block_s if wait_ms < 0 else min(self.idle_block_s, wait_ms / 1000)
        if status == STATUS_CAPPED:
            timeout_s = min(timeout_s, 0.25)
        if timeout_s <= 0:
            return
        await self._wait_for_work(timeout_s)

    async def _wait_for_work(self, timeout_s: float) -> None:
        """Block on the wake lists for up to `timeout_s`, with a fetch pipelined behind the wait.

        Redis runs the fetch the moment the wait ends (a wake token, or a poke of this worker's own list), so a
        job added to an idle queue starts after one hop, as with a plain BLPOP queue. Redis checks blocking
        timeouts only about ten times a second, so the exact deadline (a delayed job falling due) is a timer
        here that pokes the worker's own list; close() pokes it too.
        """
        if not self._may_fetch() or self._closing.is_set() or self._blocking is None:
            return
        free = self.concurrency - len(self._running)
        timer = asyncio.get_running_loop().call_later(timeout_s, self._poke)
        keys = [self.queue.keys.key("wake"), self._own_wake_key]
        self._fetch_busy = self._blocked = True
        try:
            # The BLPOP's own timeout is only a safety net behind the timer.
            reply = await self.queue.call_after_blpop(
                self._blocking, keys, timeout_s + 1, "fetch", self.id, self.lease_ms, free
            )
        except RedisError as exc:
            await self._redis_failed(exc)
            return
        finally:
            timer.cancel()
            self._fetch_busy = self._blocked = False
        self._watch.ready()
        if reply is not None:
            self._fetched(free, reply)

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
        return len(self._running) < self.concurrency and not self._fetch_busy

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
        # Every log line written while the job runs (ours, the processor's, libraries') carries the job's context;
        # each job is its own task, so the binding ends with it.
        structlog.contextvars.bind_contextvars(
            job_id=job.id, queue=self.queue.name, group=job.group, attempt=job.attempts_made + 1
        )
        await self._run_bound(job, token)

    async def _run_bound(self, job: Job, token: str) -> None:
        job._reporter = lambda value: self._report_progress(job, token, value)
        bound = self._log
        await self.hooks.emit(JobEvent("active", job))
        if job.data_error is not None:
            await self._fail(job, token, UnrecoverableError(job.data_error), bound)
            return
        try:
            result = await self.processor(job)
        except asyncio.CancelledError:
            await self._release(job, token, 0, False, "worker shut down before the job finished")
            return
        except RetryAfter as exc:
            await self._release(job, token, int(exc.delay_s * 1000), exc.hold_queue, str(exc))
            return
        except Exception as exc:
            await self._fail(job, token, exc, bound)
            return
        try:
            result_json = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            await self._fail(job, token, UnrecoverableError(f"result is not JSON-serializable: {exc}"), bound)
            return
        used = -1 if job.cost_used is None else max(0, int(job.cost_used))
        if not await self._complete(job, token, result_json, used):
            return
        job.attempts_made += 1
        job.result = result
        self.stats.completed += 1
        bound.info("job completed", run_ms=int(time.time() * 1000) - (job.processed_ms or 0))
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
            "fail", job, job.id, token, reason, stack, delay_ms, count, age_ms, _ev(self), STACKS_KEPT
        )
        if reply is None:
            return
        job.attempts_made = attempts_made
        job.failed_reason = reason
        if final:
            self.stats.failed += 1
            bound.warning("job failed", reason=reason, unrecoverable=unrecoverable)
            await self.hooks.emit(JobEvent("failed", job, error=exc, final=True))
        else:
            self.stats.retried += 1
            bound.info("job will retry", reason=reason, delay_ms=delay_ms)
            await self.hooks.emit(JobEvent("retrying", job, error=exc, delay_ms=delay_ms))

    def _backoff_ms(self, job: Job, attempts_made: int, exc: BaseException) -> int:
        if self.backoff_strategy is not None:
            return max(0, int(self.backoff_strategy(attempts_made, exc)))
        return (job.backoff or Backoff()).delay_for(attempts_made)

    async def _release(self, job: Job, token: str, delay_ms: int, hold: bool, reason: str) -> None:
        reply = await self._finish_call("release", job, job.id, token, delay_ms, 1 if hold else 0, reason, _ev(self))
        if reply is None:
            return
        self.stats.released += 1
        self._log.info("job released", job_id=job.id, delay_ms=delay_ms, hold_queue=hold, reason=reason)
        await self.hooks.emit(JobEvent("released", job, delay_ms=delay_ms))

    async def _complete(self, job: Job, token: str, result_json: str, used: int) -> bool:
        """Hand the completion to the ack loop and wait for its outcome; True when it was written."""
        self._mark_finishing(job)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks.append(_Ack(job, token, result_json, used, done))
        self._acks_waiting.set()
        return await self._finish_outcome("complete", job, await done)

    async def _ack_loop(self) -> None:
        """Send waiting completions, a batch per `complete` call; the first one of a batch is never delayed.

        Completions that arrive while a call is in flight wait for it and go together in the next call
        ("group commit"): at a high rate a call carries many jobs, when idle each job goes alone at once.
        """
        count, age_ms = self.keep_completed.args()
        while True:
            await self._acks_waiting.wait()
            self._acks_waiting.clear()
            while self._acks:
                batch, self._acks = self._acks[:ACK_BATCH], self._acks[ACK_BATCH:]
                # While a backlog lasts, the same call starts the next jobs (as BullMQ's moveToFinished does):
                # one round trip per batch instead of two. When idle, completions go alone.
                want = 0
                if self._backlog and not self._fetch_busy and not self._closing.is_set():
                    want = max(0, self.concurrency - len(self._running) + len(batch))
                args: list[str | int] = [count, age_ms, _ev(self), self.id, self.lease_ms, want]
                for ack in batch:
                    args += [ack.job.id, ack.token, ack.result_json, ack.used]
                if want > 0:
                    self._fetch_busy = True
                try:
                    reply = await self._call_riding_outages("complete", args)
                finally:
                    if want > 0:
                        self._fetch_busy = False
                codes = [GAVE_UP] * len(batch) if reply is None else [int(c) for c in reply[1 : 1 + len(batch)]]
                for ack, code in zip(batch, codes, strict=True):
                    if not ack.done.done():
                        ack.done.set_result(code)
                if want > 0:
                    if reply is not None:
                        self._fetched(want, reply[1 + len(batch) :])
                    self._nudge()

    async def _finish_call(self, script: str, job: Job, *args: str | int | float) -> list[Any] | None:
        """Run a finishing script for one job; None when the lease was lost or Redis stayed away."""
        self._mark_finishing(job)
        reply = await self._call_riding_outages(script, args)
        if reply is None:
            await self._finish_outcome(script, job, GAVE_UP)
            return None
        return reply if await self._finish_outcome(script, job, int(reply[0])) else None

    def _mark_finishing(self, job: Job) -> None:
        held = self._running.get(job.id)
        if held is not None:
            held.finishing = True

    async def _call_riding_outages(self, script: str, args: Sequence[str | int | float]) -> list[Any] | None:
        """Run a finishing script, retrying through a Redis outage for as long as a lease lasts; None: gave up."""
        deadline = time.monotonic() + self.lease_ms / 1000
        while True:
            try:
                reply = list(await self.queue.call(script, *args))
                self._watch.ready()
                return reply
            except RedisError as exc:
                if time.monotonic() >= deadline:
                    return None
                await self._redis_failed(exc)

    async def _finish_outcome(self, script: str, job: Job, code: int) -> bool:
        """Log and report a finishing call that did not take effect; True when it did."""
        if code == GAVE_UP:
            self._log.error("gave up finishing job; it will be recovered", job_id=job.id, action=script)
            await self.hooks.emit(JobEvent("error", job, error=RedisError("Redis unreachable while finishing")))
            return False
        try:
            raise_for_code(code, job.id)
        except LeaseLostError as exc:
            self.stats.leases_lost += 1
            self._log.warning("lease lost; result discarded", job_id=job.id, action=script)
            await self.hooks.emit(JobEvent("error", job, error=exc))
            return False
        except JobNotFoundError as exc:
            self._log.warning("job removed while it ran; outcome discarded", job_id=job.id, action=script)
            await self.hooks.emit(JobEvent("error", job, error=exc))
            return False
        return True

    async def _report_progress(self, job: Job, token: str, value: Any) -> None:
        payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        code = int((await self.queue.call("progress", job.id, token, payload, _ev(self)))[0])
        raise_for_code(code, job.id)
        job.progress = value
        await self.hooks.emit(JobEvent("progress", job, progress=value))

    # -- housekeeping ---------------------------------------------------------------------------------------

    async def _renew_leases_loop(self) -> None:
        interval_s = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._heartbeat()
                pairs: list[str] = []
                for job_id, held in list(self._running.items()):
                    pairs += [job_id, held.token]
                if pairs:
                    lost = await self.queue.call("extend", self.lease_ms, *pairs)
                    for job_id in lost:
                        # A job that finished while the renewal was under way gave its lease up itself.
                        running = self._running.get(job_id)
                        if running is not None and not running.finishing:
                            # Another worker owns it now: stop this run rather than duplicate its work.
                            self._log.warning("lease lost while running; stopping this run", job_id=job_id)
                            self.stats.leases_lost += 1
                            running.task.cancel()
                self._watch.ready()
            except RedisError as exc:
                await self._redis_failed(exc)

    async def _stalled_loop(self) -> None:
        while True:
            try:
                count, age_ms = self.keep_failed.args()
                flat = await self.queue.call("stalled", self.max_stalls, count, age_ms, _ev(self))
                for i in range(0, len(flat), 2):
                    job_id, outcome = str(flat[i]), str(flat[i + 1])
                    self.stats.stalled_recovered += 1
                    self._log.warning("stalled job recovered", job_id=job_id, outcome=outcome)
                    await self.hooks.emit(JobEvent("stalled", job_id=job_id, final=outcome == "failed"))
            except RedisError as exc:
                await self._redis_failed(exc)
            await asyncio.sleep(self.stalled_interval_ms / 1000)

    async def _heartbeat(self) -> None:
        beat = {
            "last_seen_ms": int(time.time() * 1000),
            "running": len(self._running),
            "concurrency": self.concurrency,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        await self.queue.redis.hset(self.queue.keys.key("workers"), self.id, json.dumps(beat))

    async def _forget_self(self) -> None:
        with contextlib.suppress(RedisError):
            await self.queue.redis.hdel(self.queue.keys.key("workers"), self.id)
            await self.queue.redis.delete(self._own_wake_key)

    async def _redis_failed(self, exc: RedisError) -> None:
        self.stats.redis_errors += 1
        await self.hooks.emit(JobEvent("error", error=exc))
        await self._watch.failed(exc)

    async def _finish_in_flight(self) -> None:
        timeout_s = self._shutdown_timeout_s
        tasks = [r.task for r in self._running.values()]
        if not tasks:
            return
        self._log.info("waiting for running jobs", count=len(tasks), timeout_s=timeout_s)
        _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if not pending:
            return
        unfinished = [r.task for r in self._running.values() if r.task in pending and not r.finishing]
        for task in unfinished:
            task.cancel()
        self._log.info("releasing unfinished jobs", count=len(unfinished))
        # Runs already writing their outcome get a few more seconds to finish that one call.
        _done, stuck = await asyncio.wait(pending, timeout=FINISHING_GRACE_S)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck)


def _never() -> bool:
    return False


def _ev(worker: Worker) -> int:
    return worker.queue.max_events


def _blocking_client(client: Redis) -> Redis:
    """A second client on the same server for blocking waits: no socket timeout, its own small pool."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, max_connections=2, **kwargs))
