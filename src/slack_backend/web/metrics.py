"""Prometheus metrics: job outcomes and timings from worker hooks, queue state read from Redis at scrape time."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from slack_backend.logging import get_logger
from slack_backend.queue import Job, JobEvent, JobState, Queue, RateGate, Worker
from slack_backend.slack.errors import AppNotInstalledError, ResponseUrlError, SlackRejectedError

log = get_logger(__name__)

METRICS_PATH = "/metrics"
OUTCOMES = ("completed", "failed", "retried", "released", "stalled")
TOKEN_DIRECTIONS = ("input", "output")
# Jobs wait behind a rate limit of a few starts a second, and an LLM call runs for seconds: buckets span both.
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RUN_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# A scrape must answer before Prometheus gives up (10 s by default), even when Redis hangs.
REFRESH_TIMEOUT_S = 2.0
TOP_WORKSPACES = 20
# Label values come from error codes we did not write; anything else is folded into "other" to bound cardinality.
_KIND = re.compile(r"^[a-z0-9_]{1,48}$")


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (never the process-global default one).

    Hooks on instrumented workers count outcomes and observe timings as they happen; queue depth and live workers
    are read from Redis by `refresh()` just before each scrape; worker counters (rate-limit waits, Redis errors)
    are read from `worker.stats` during collection.

    Args:
        live_worker_age_ms: a heartbeat older than this does not count as a live worker (default: the 30 s lease;
            workers beat every third of their lease).
    """

    def __init__(self, *, live_worker_age_ms: int = 30_000) -> None:
        self.registry = CollectorRegistry()
        self.live_worker_age_ms = live_worker_age_ms
        self._queues: dict[str, Queue] = {}
        self._workers: list[Worker] = []
        self._gates: list[RateGate] = []
        self._refresh_redis_errors = 0
        r = self.registry
        self.jobs = Counter(
            "slack_backend_jobs", "Jobs finished or handed back, by outcome.", ["queue", "outcome"], registry=r
        )
        self.job_wait = Histogram(
            "slack_backend_job_wait_seconds",
            "Completed jobs: time from enqueue to first start.",
            ["queue"],
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.job_run = Histogram(
            "slack_backend_job_run_seconds",
            "Completed jobs: time from start to finish of the run that completed.",
            ["queue"],
            buckets=RUN_BUCKETS_S,
            registry=r,
        )
        self.queue_depth = Gauge(
            "slack_backend_queue_depth",
            "Jobs in each state (read from Redis at scrape).",
            ["queue", "state"],
            registry=r,
        )
        self.workers = Gauge(
            "slack_backend_workers", "Workers with a recent heartbeat (from Redis).", ["queue"], registry=r
        )
        self.budget_used = Gauge(
            "slack_backend_token_budget_used",
            "Estimated tokens started inside the token budget's current window (read from Redis at scrape).",
            ["queue"],
            registry=r,
        )
        self.budget_limit = Gauge(
            "slack_backend_token_budget_limit",
            "The token budget per window (0: no budget).",
            ["queue"],
            registry=r,
        )
        self.group_jobs = Gauge(
            "slack_backend_workspace_jobs",
            "Waiting and active jobs of the busiest workspaces (top 20 by waiting, read at scrape).",
            ["queue", "workspace", "state"],
            registry=r,
        )
        self.ai_tokens = Counter(
            "slack_backend_ai_tokens",
            "Model tokens used by completed jobs, by workspace and direction (input/output).",
            ["workspace", "direction"],
            registry=r,
        )
        self.slack_delivery_errors = Counter(
            "slack_backend_slack_delivery_errors",
            "Slack API and response_url errors that failed or retried a job, by kind.",
            ["kind"],
            registry=r,
        )
        r.register(_WorkerStatsCollector(self))

    # -- wiring ---------------------------------------------------------------------------------------------

    def watch(self, queue: Queue) -> None:
        """Report `queue`'s depth and live workers; a later queue of the same name takes its place."""
        self._queues[queue.name] = queue
        for state in JobState:
            self.queue_depth.labels(queue.name, state.value)
        self.workers.labels(queue.name)

    def unwatch(self, queue: Queue) -> None:
        """Stop reading `queue` (its client is about to close); another queue of the same name stays."""
        if self._queues.get(queue.name) is queue:
            del self._queues[queue.name]

    def instrument(self, worker: Worker) -> None:
        """Count what `worker` does (hooks), read its stats at each scrape, and watch its queue.

        A processor that carries a `rate_gate` (the model-call gate) has its waits counted too.
        """
        name = worker.queue.name
        self._workers.append(worker)
        gate = getattr(worker.processor, "rate_gate", None)
        if isinstance(gate, RateGate):
            self.instrument_gate(gate)
        if name not in self._queues:
            self.watch(worker.queue)
        for outcome in OUTCOMES:
            self.jobs.labels(name, outcome)
        self.job_wait.labels(name)
        self.job_run.labels(name)

        def completed(event: JobEvent) -> None:
            self.jobs.labels(name, "completed").inc()
            if event.job is not None:
                self._observe_completed(name, event.job, event.result)

        def failed(event: JobEvent) -> None:
            self.jobs.labels(name, "failed").inc()
            self._count_delivery_error(event.error)

        def retrying(event: JobEvent) -> None:
            self.jobs.labels(name, "retried").inc()
            self._count_delivery_error(event.error)

        def released(event: JobEvent) -> None:
            self.jobs.labels(name, "released").inc()

        def stalled(event: JobEvent) -> None:
            # A job that too many stalls failed for good also fires `failed`, counted there.
            self.jobs.labels(name, "stalled").inc()

        worker.on("completed", completed)
        worker.on("failed", failed)
        worker.on("retrying", retrying)
        worker.on("released", released)
        worker.on("stalled", stalled)

    def count_delivery_error(self, kind: str) -> None:
        """Count a Slack delivery error the engine never sees (a swallowed progress update, say)."""
        self.slack_delivery_errors.labels(_safe_kind(kind)).inc()

    # -- scraping -------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read queue depth and live workers from Redis; on failure keep the last values and count the error."""
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                for queue in list(self._queues.values()):
                    counts = await queue.counts()
                    beats = await queue.workers()
                    for state, count in counts.items():
                        self.queue_depth.labels(queue.name, state.value).set(count)
                    self.workers.labels(queue.name).set(_live(beats, self.live_worker_age_ms))
                    limits = await queue.limits()
                    self.budget_used.labels(queue.name).set(await queue.budget_used())
                    self.budget_limit.labels(queue.name).set(limits.budget.tokens if limits.budget else 0)
                    # Only the current busiest are reported: workspaces come and go, so the series are rebuilt.
                    self.group_jobs.clear()
                    for info in await queue.groups(limit=TOP_WORKSPACES):
                        self.group_jobs.labels(queue.name, info.group, "waiting").set(info.waiting)
                        self.group_jobs.labels(queue.name, info.group, "active").set(info.active)
        except (RedisError, OSError, TimeoutError) as exc:
            self._refresh_redis_errors += 1
            log.warning("metrics refresh failed", error=f"{type(exc).__name__}: {exc}")

    async def render(self) -> bytes:
        """Refresh from Redis, then the text exposition of every metric."""
        await self.refresh()
        return generate_latest(self.registry)

    def instrument_gate(self, gate: RateGate) -> None:
        """Read a call gate's waits at each scrape, under the gate's name (a queue's gate: the queue's name)."""
        if gate not in self._gates:
            self._gates.append(gate)

    def worker_totals(self) -> dict[str, WorkerTotals]:
        """Rate-limit waits by queue name, summed over the instrumented workers and call gates."""
        totals: dict[str, WorkerTotals] = {}
        for worker in self._workers:
            t = totals.setdefault(worker.queue.name, WorkerTotals())
            t.rate_limited_waits += worker.stats.rate_limited_waits
            t.rate_limited_wait_ms += worker.stats.rate_limited_wait_ms
        for gate in self._gates:
            t = totals.setdefault(gate.name, WorkerTotals())
            t.call_gate_waits += gate.stats.waits
            t.call_gate_wait_ms += gate.stats.wait_ms
        return totals

    def redis_errors(self) -> int:
        """Redis errors seen by the instrumented workers and by metric refreshes."""
        return self._refresh_redis_errors + sum(w.stats.redis_errors for w in self._workers)

    # -- helpers --------------------------------------------------------------------------------------------

    def _observe_completed(self, queue: str, job: Job, result: Any) -> None:
        now_ms = int(time.time() * 1000)
        # The same definitions as the `completed` stream event: enqueue to first start, and this run alone.
        start_ms = job.first_processed_ms if job.first_processed_ms is not None else job.processed_ms
        if start_ms is not None:
            self.job_wait.labels(queue).observe(max(0, start_ms - job.created_ms) / 1000)
        if job.processed_ms is not None:
            self.job_run.labels(queue).observe(max(0, now_ms - job.processed_ms) / 1000)
        outcome = result if isinstance(result, dict) else job.result
        if not isinstance(outcome, dict):
            return
        workspace = job.group or "none"
        for direction in TOKEN_DIRECTIONS:
            tokens = outcome.get(f"{direction}_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
                self.ai_tokens.labels(workspace, direction).inc(tokens)

    def _count_delivery_error(self, error: BaseException | None) -> None:
        kind = delivery_error_kind(error)
        if kind is not None:
            self.slack_delivery_errors.labels(kind).inc()


@dataclass
class WorkerTotals:
    """Counters summed over one queue's instrumented workers."""

    rate_limited_waits: int = 0
    rate_limited_wait_ms: int = 0
    call_gate_waits: int = 0
    call_gate_wait_ms: int = 0


class _WorkerStatsCollector:
    """Counters that live on `worker.stats`, read at collection time (they only grow, as counters must)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families({}, 0)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._metrics.worker_totals(), self._metrics.redis_errors())

    @staticmethod
    def _families(totals: dict[str, WorkerTotals], redis_errors: int) -> Iterator[Metric]:
        waits = CounterMetricFamily(
            "slack_backend_rate_limit_waits", "Times a worker slept on the rate limit.", labels=["queue"]
        )
        wait_s = CounterMetricFamily(
            "slack_backend_rate_limit_wait_seconds",
            "Time workers slept on the rate limit.",
            labels=["queue"],
        )
        gate_waits = CounterMetricFamily(
            "slack_backend_call_gate_waits",
            "Times a job waited at the call gate for a slot of the rate limit before its model call.",
            labels=["queue"],
        )
        gate_wait_s = CounterMetricFamily(
            "slack_backend_call_gate_wait_seconds",
            "Time jobs waited at the call gate before their model calls.",
            labels=["queue"],
        )
        for queue, t in sorted(totals.items()):
            waits.add_metric([queue], t.rate_limited_waits)
            wait_s.add_metric([queue], t.rate_limited_wait_ms / 1000)
            gate_waits.add_metric([queue], t.call_gate_waits)
            gate_wait_s.add_metric([queue], t.call_gate_wait_ms / 1000)
        yield waits
        yield wait_s
        yield gate_waits
        yield gate_wait_s
        yield CounterMetricFamily(
            "slack_backend_redis_errors", "Redis errors seen by workers and metric refreshes.", value=redis_errors
        )


def delivery_error_kind(error: BaseException | None) -> str | None:
    """The metric kind of a Slack delivery error (an error code or HTTP status), or None for other errors."""
    cause = error
    # A classified error keeps the SlackApiError it came from as its cause.
    while cause is not None:
        if isinstance(cause, SlackRejectedError):
            return _safe_kind(cause.error)
        if isinstance(cause, AppNotInstalledError):
            return "not_installed"
        if isinstance(cause, ResponseUrlError):
            return _safe_kind(f"response_url_http_{cause.status_code}")
        if isinstance(cause, SlackApiError):
            data = getattr(cause.response, "data", None)
            code = data.get("error") if isinstance(data, dict) else None
            return _safe_kind(code if isinstance(code, str) and code else "api_error")
        cause = cause.__cause__
    return None


def _safe_kind(kind: str) -> str:
    return kind if _KIND.match(kind) else "other"


def _live(beats: dict[str, dict[str, Any]], max_age_ms: int) -> int:
    now_ms = int(time.time() * 1000)
    return sum(1 for beat in beats.values() if now_ms - int(beat.get("last_seen_ms", 0)) <= max_age_ms)


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the text exposition of the app's `Metrics` (`app.state.metrics`)."""
    metrics = getattr(request.app.state, "metrics", None)
    if not isinstance(metrics, Metrics):
        raise RuntimeError("app.state.metrics is not set: build the app with create_app or metrics_app")
    return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)


def metrics_routes(*, public: bool = False, token: str | None = None) -> list[Route]:
    """The /metrics route; the app must hold its `Metrics` in `app.state.metrics`.

    Args:
        public: the route shares a listener with Slack's public endpoint, so it answers only a request bearing
            `Authorization: Bearer <token>` (403 while no METRICS_TOKEN is set): the metrics name workspaces.
        token: METRICS_TOKEN, for a public route.
    """
    if not public:
        return [Route(METRICS_PATH, metrics_endpoint, methods=["GET"])]
    expected = _digest(token) if token else None

    async def guarded(request: Request) -> Response:
        if expected is None:
            return PlainTextResponse(
                "/metrics is not served on the public port until METRICS_TOKEN is set (then send it as a bearer token)",
                status_code=403,
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Digests compared, never the raw strings: a non-ASCII header would make compare_digest raise.
        if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(given.strip()), expected):
            return PlainTextResponse("metrics token required", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await metrics_endpoint(request)

    return [Route(METRICS_PATH, guarded, methods=["GET"])]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def metrics_app(metrics: Metrics) -> Starlette:
    """A Starlette app that serves only /metrics (what a worker process exposes)."""
    app = Starlette(routes=metrics_routes())
    app.state.metrics = metrics
    return app


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's shutdown logic decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics server: the address it listens on."""

    host: str
    port: int


@contextlib.asynccontextmanager
async def serve_metrics(metrics: Metrics, port: int, *, host: str = "127.0.0.1") -> AsyncIterator[MetricsServer]:
    """Serve `metrics` at http://host:port/metrics for the block's duration (port 0: any free port).

    Raises:
        OSError: the port cannot be bound (in use, or not allowed); nothing is left running.
    """
    # Bound here rather than by uvicorn, which exits the process when it cannot bind.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(metrics_app(metrics), log_config=None, access_log=False, lifespan="off")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics server")
    try:
        while not server.started:
            if task.done():
                await task
                raise OSError(f"metrics server on {host}:{bound_port} stopped while starting")
            await asyncio.sleep(0.01)
        log.info("metrics server started", host=host, port=bound_port)
        yield MetricsServer(host, bound_port)
    finally:
        server.should_exit = True
        await task
        sock.close()
