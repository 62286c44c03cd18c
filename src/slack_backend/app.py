"""Process lifecycle: run the web app and/or workers in one process, or supervise several worker processes.

Signals: the first SIGTERM/SIGINT stops fetching, lets running jobs finish up to SHUTDOWN_TIMEOUT_S, releases the
rest to waiting, stops the web server and closes Redis; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn

from slack_backend.config import Settings
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.queue import Worker, create_redis, warn_unsafe_server
from slack_backend.queue.runner import HANDLED_SIGNALS, ShutdownSignals

if TYPE_CHECKING:
    from slack_backend.web.metrics import Metrics

log = structlog.get_logger("slack_backend.app")

# How often the supervisor looks for a child that exited.
_CHILD_POLL_S = 0.2


def web_server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for the web app: HTTP parsed by httptools (C), not h11 (Python), which cost 0.6-1.8 ms of
    CPU on each Slack request and its ack (docs/performance.md, round 6)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools",
        log_config=None,
        access_log=False,
        lifespan="on",
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process's ShutdownSignals decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(
    settings: Settings,
    *,
    web: bool,
    worker: bool,
    concurrency: int | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run the web app, a worker, or both in this process until a signal asks it to stop.

    Metrics (`metrics`, or new ones) count this process's worker; the web app serves them at /metrics, and a
    worker-only process serves them on WORKER_METRICS_PORT when it is set. With web and worker together, /readyz
    also waits for the worker's heartbeat.
    """
    from slack_backend.web.app import create_app
    from slack_backend.web.metrics import Metrics, serve_metrics

    app_metrics = metrics if metrics is not None else Metrics(live_worker_age_ms=settings.job_lease_ms)

    redis = create_redis(settings.redis_target(), client_name="slack-backend")
    component = "+".join(name for name, on in (("web", web), ("worker", worker)) if on)
    await warn_unsafe_server(redis, component=component)
    signals = ShutdownSignals()
    signals.install()
    tasks: list[asyncio.Task[None]] = []
    ai_worker: Worker | None = None
    server: _EmbeddedServer | None = None
    cleanup = contextlib.AsyncExitStack()
    try:
        # Migrations first, once, before anything reads the database (`slack-backend db upgrade` does the same).
        await _migrate(settings)
        if worker:
            ai_worker = await build_ai_worker(settings, redis, cleanup, concurrency=concurrency)
            app_metrics.instrument(ai_worker)
            tasks.append(asyncio.create_task(ai_worker.run(), name="ai worker"))
        if web:
            app = create_app(settings, redis=redis, metrics=app_metrics, expect_workers=worker)
            server = _EmbeddedServer(web_server_config(app, settings))
            tasks.append(asyncio.create_task(server.serve(), name="web"))
        elif worker and settings.worker_metrics_port is not None:
            try:
                await cleanup.enter_async_context(
                    serve_metrics(app_metrics, settings.worker_metrics_port, host=settings.host)
                )
            except OSError as exc:
                # Jobs matter more than their metrics: a taken port must not stop (or crash-loop) the worker.
                log.error("worker metrics port unavailable", port=settings.worker_metrics_port, error=str(exc))
        frozen = freeze_startup_heap()
        log.info("service started", web=web, worker=worker, port=settings.port if web else None, frozen_objects=frozen)
        stopper = asyncio.create_task(signals.requested.wait())
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if ai_worker is not None:
            await ai_worker.close(settings.shutdown_timeout_s)
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*tasks)
    finally:
        await cleanup.aclose()
        await redis.aclose()
        signals.remove()
        log.info("service stopped")


def freeze_startup_heap() -> int:
    """Move every object alive now (the libraries, settings, compiled statements) out of the cyclic garbage
    collector's reach; returns how many objects are frozen.

    A full (oldest-generation) collection scans every tracked object: about 280,000 once the web app, Bolt, the
    Anthropic SDK and SQLAlchemy are loaded, an 83-96 ms pause of the event loop here, which fell on whichever
    requests were in flight (bench.overhead: max 102-119 ms against a p50 of 9 ms). What is built at start-up
    lives as long as the process, so scanning it finds nothing to free.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def _migrate(settings: Settings) -> None:
    from slack_backend.slack.tokens import token_cipher
    from slack_backend.store import create_engine, create_tables

    engine = create_engine(settings.database_url)
    try:
        await create_tables(engine, token_cipher(settings))
    finally:
        await engine.dispose()


def supervise_workers(processes: int, concurrency: int | None, metrics_port: int | None = None) -> int:
    """Start `processes` worker processes and forward signals to them; return 0 when all exited cleanly.

    A child that exits before any signal came (it crashed, or was killed) is logged with its pid and exit code; the
    others are then stopped as on SIGTERM (their running jobs finish) and the result is 1, so the process manager
    restarts the whole group rather than leave it running short-handed. A second signal reaches the children as a
    second signal (they exit at once) and the result is 1 too. With `metrics_port`, child i serves its /metrics on
    metrics_port + i.
    """
    if metrics_port is not None and metrics_port + processes - 1 > 65535:
        raise ValueError(f"WORKER_METRICS_PORT {metrics_port} leaves no room for {processes} processes")
    args = [sys.executable, "-m", "slack_backend.cli", "worker", "--processes", "1"]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]

    def child_env(i: int) -> dict[str, str]:
        env = dict(os.environ)
        if metrics_port is not None:
            env["WORKER_METRICS_PORT"] = str(metrics_port + i)
        return env

    # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which forwards it once; otherwise each child
    # would see it twice (from the terminal and from us) and take it as the "exit now" second signal.
    children = [subprocess.Popen(args, start_new_session=True, env=child_env(i)) for i in range(processes)]
    log.info("worker processes started", processes=processes, pids=[c.pid for c in children])
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in HANDLED_SIGNALS}
    reported: set[int] = set()
    died = False

    def notice_exits() -> None:
        nonlocal died
        for child in children:
            code = child.poll()
            if code is None or child.pid in reported:
                continue
            reported.add(child.pid)
            if not stopping:
                died = True
                log.error("worker process died", pid=child.pid, code=code, action="stopping the others")
                forward(signal.SIGTERM, None)

    try:
        while any(child.poll() is None for child in children):
            notice_exits()
            # Polling, not wait(): any child's death must be seen at once, whichever child it is.
            time.sleep(_CHILD_POLL_S)
        notice_exits()
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("worker processes exited", codes=codes)
    return 0 if not died and all(code == 0 for code in codes) else 1
