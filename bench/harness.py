"""The shared workload every driver runs: enqueue one by one, enqueue fast, process, and enqueue-to-start latency.

Stdlib and redis-py only, because peer drivers import it from the peers' virtualenv. A driver module builds a
`Driver` and calls `main(driver)`; `python -m bench.drivers.NAME run '<json RunConfig>'` prints one JSON line,
and `... worker '<json>'` is the worker process the run spawns (it prints BENCH-READY, then BENCH-RESULT <json>).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import redis

from bench import redis_stats
from bench.stats import latency_summary

ROOT = Path(__file__).resolve().parents[1]
READY = "BENCH-READY"
RESULT = "BENCH-RESULT "
# Workers get this long after BENCH-READY before paced jobs arrive: connecting and loading scripts is startup,
# not latency. The report also gives p99 after the first second for the same reason.
SETTLE_S = 1.0


def payload(seq: int, enqueued_at: float = 0.0) -> dict[str, Any]:
    """A Slack-like job payload of about 300 bytes of JSON, the same for every system."""
    return {
        "workspace_id": "T0BENCH01",
        "user_id": "U0USER0001",
        "channel_id": "C0CHAN0001",
        "trigger": "slash_command",
        "trigger_text": "Can you review my PR today? The deploy is blocked on it.",
        "response_url": f"https://hooks.slack.com/commands/T0BENCH01/{1700000000000 + seq}/abcdefghijklmnopqrstuvwx",
        "request_id": uuid.uuid4().hex,
        "seq": seq,
        "enqueued_at": enqueued_at,
    }


class Probe:
    """Worker-side recorder: the processor calls `start(data)` on entry and `finish()` on exit.

    Thread-safe, since some peers (Dramatiq) run processors on threads. Done after `n` finishes (n > 0), or
    when the process gets SIGTERM (n == 0).
    """

    def __init__(self, n: int, *, record_starts: bool = False) -> None:
        self.n = n
        self.record_starts = record_starts
        self.started = 0
        self.finished = 0
        self.first_start: float | None = None
        self.done_at: float | None = None
        self.latencies: list[float] = []
        self.start_times: list[float] = []
        self.engine_start_ms: list[int] = []
        self._cpu_at_first = 0.0
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._done = asyncio.Event()

    def start(self, data: Any, engine_ms: int | None = None) -> None:
        """A job's processor began; `engine_ms` is the engine's own start stamp, when it has one."""
        now = time.time()
        with self._lock:
            if self.first_start is None:
                self.first_start = now
                self._cpu_at_first = _cpu_s()
            self.started += 1
            enqueued_at = data.get("enqueued_at") if isinstance(data, dict) else None
            if enqueued_at:
                self.latencies.append(now - float(enqueued_at))
                self.start_times.append(now)
            if self.record_starts:
                if not enqueued_at:
                    self.start_times.append(now)
                if engine_ms is not None:
                    self.engine_start_ms.append(int(engine_ms))

    def finish(self) -> None:
        """A job's processor returned."""
        with self._lock:
            self.finished += 1
            if self.n and self.finished == self.n:
                self.done_at = time.time()
                self._set_done()

    def stop(self) -> None:
        """End the measurement now (SIGTERM in run-until-stopped mode)."""
        self.done_at = self.done_at or time.time()
        self._set_done()

    def _set_done(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._done.set()
        else:
            self._loop.call_soon_threadsafe(self._done.set)

    async def wait(self) -> None:
        await self._done.wait()

    def result(self) -> dict[str, Any]:
        """Throughput over first start to last finish, worker CPU per job, max RSS and the latency figures."""
        out: dict[str, Any] = {"started": self.started, "finished": self.finished}
        if self.first_start is not None and self.done_at is not None and self.finished:
            span = max(self.done_at - self.first_start, 1e-9)
            out["per_s"] = self.finished / span
            out["span_s"] = span
            out["worker_cpu_ms_per_job"] = (_cpu_s() - self._cpu_at_first) * 1000 / self.finished
        out["worker_max_rss_mb"] = max_rss_mb()
        if self.latencies:
            out["latency"] = latency_summary(self.latencies, self.start_times)
        if self.record_starts:
            out["start_times"] = self.start_times
            out["engine_start_ms"] = self.engine_start_ms
        return out


class Enqueuer(Protocol):
    """One system's producer side, bound to one queue."""

    async def one(self, data: dict[str, Any]) -> None: ...

    async def fast(self, datas: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...


OpenEnqueuer = Callable[[str, str], Awaitable[Enqueuer]]
RunWorker = Callable[[str, str, int, Probe, dict[str, Any]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Driver:
    """A system under test: how to enqueue, how to run a worker (until cancelled), and how it was driven."""

    name: str
    module: str
    version: Callable[[], str]
    fast_method: str
    open_enqueuer: OpenEnqueuer
    run_worker: RunWorker
    # Runs the driver's coroutines (producer and worker); ours uses the loop its service runs on (uvloop).
    run_loop: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run


@dataclass(frozen=True)
class ProcessSpec:
    """One process measurement: a label, the worker's concurrency and driver-specific worker options."""

    label: str
    concurrency: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """What one driver run does; every queue it makes is named `<tag>-<phase>`."""

    tag: str
    n: int = 10_000
    latency_n: int = 1_000
    rate: float = 200.0
    process: list[ProcessSpec] = field(default_factory=lambda: [ProcessSpec("c10", 10)])
    phases: list[str] = field(default_factory=lambda: ["enqueue_seq", "enqueue_fast", "process", "latency"])
    log_dir: str = ""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunConfig:
        specs = [ProcessSpec(**p) for p in raw.pop("process", [])] or None
        return cls(**raw) if specs is None else cls(**raw, process=specs)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the run (producer side) ------------------------------------------------------------------------------------


async def run_driver(driver: Driver, url: str, cfg: RunConfig) -> dict[str, Any]:
    """Run every phase of `cfg` for one system; a failing phase is reported as {"error": ...} and the rest go on."""
    out: dict[str, Any] = {"system": driver.name, "fast_method": driver.fast_method, "n": cfg.n}
    try:
        out["version"] = driver.version()
    except Exception as exc:
        return {"system": driver.name, "unavailable": _describe(exc)}
    stats_client = redis.Redis.from_url(url)
    try:
        if "enqueue_seq" in cfg.phases:
            out["enqueue_seq"] = await _guard(_enqueue(driver, url, cfg, stats_client, "seq", _one_by_one))
        if "enqueue_fast" in cfg.phases:
            out["enqueue_fast"] = await _guard(_enqueue(driver, url, cfg, stats_client, "fast", _in_bulk))
        if "process" in cfg.phases:
            out["process"] = {
                spec.label: await _guard(_process(driver, url, cfg, spec, stats_client)) for spec in cfg.process
            }
        if "latency" in cfg.phases:
            out["latency"] = await _guard(_latency(driver, url, cfg))
    finally:
        stats_client.close()
    return out


async def _guard(phase: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await phase
    except Exception as exc:
        return {"error": _describe(exc)}


async def _one_by_one(enq: Enqueuer, datas: list[dict[str, Any]]) -> None:
    for data in datas:
        await enq.one(data)


async def _in_bulk(enq: Enqueuer, datas: list[dict[str, Any]]) -> None:
    await enq.fast(datas)


async def _enqueue(
    driver: Driver,
    url: str,
    cfg: RunConfig,
    stats: redis.Redis,
    queue_suffix: str,
    add_all: Callable[[Enqueuer, list[dict[str, Any]]], Awaitable[None]],
) -> dict[str, Any]:
    """Time `add_all` putting cfg.n payloads on a fresh queue, with Redis's command counts around it."""
    enq = await driver.open_enqueuer(url, f"{cfg.tag}-{queue_suffix}")
    try:
        datas = [payload(i) for i in range(cfg.n)]
        before = redis_stats.snapshot(stats)
        t0 = time.perf_counter()
        await add_all(enq, datas)
        elapsed = time.perf_counter() - t0
        after = redis_stats.snapshot(stats)
    finally:
        await enq.close()
    return {"per_s": cfg.n / elapsed, "elapsed_s": elapsed, **redis_stats.per_job(before, after, cfg.n)}


async def _process(driver: Driver, url: str, cfg: RunConfig, spec: ProcessSpec, stats: redis.Redis) -> dict[str, Any]:
    queue = f"{cfg.tag}-proc-{spec.label}"
    enq = await driver.open_enqueuer(url, queue)
    try:
        await enq.fast([payload(i) for i in range(cfg.n)])
    finally:
        await enq.close()
    before = redis_stats.snapshot(stats)
    # The worker gives up a little before we do, so a stuck run still says how far it got.
    timeout_s = max(60.0, cfg.n / 100)
    worker = await WorkerProcess.spawn(
        driver.module,
        {
            "url": url,
            "queue": queue,
            "n": cfg.n,
            "concurrency": spec.concurrency,
            "options": spec.options,
            "timeout_s": timeout_s - 5,
        },
        log_path=_log_path(cfg, f"{driver.name}-{queue}"),
    )
    try:
        result = await worker.result(timeout_s=timeout_s)
    finally:
        await worker.stop()
    after = redis_stats.snapshot(stats)
    if "error" in result:
        return result
    return {**result, "concurrency": spec.concurrency, **redis_stats.per_job(before, after, cfg.n)}


async def _latency(driver: Driver, url: str, cfg: RunConfig) -> dict[str, Any]:
    queue = f"{cfg.tag}-lat"
    pace_s = cfg.latency_n / cfg.rate
    worker = await WorkerProcess.spawn(
        driver.module,
        {"url": url, "queue": queue, "n": cfg.latency_n, "concurrency": 10, "timeout_s": 25.0 + pace_s},
        log_path=_log_path(cfg, f"{driver.name}-{queue}"),
    )
    try:
        await worker.ready(timeout_s=30.0)
        enq = await driver.open_enqueuer(url, queue)
        try:
            await asyncio.sleep(SETTLE_S)
            # Each job stamped just before its add.
            max_lag_s = await paced(cfg.latency_n, cfg.rate, lambda i, _scheduled: enq.one(payload(i, time.time())))
        finally:
            await enq.close()
        result = await worker.result(timeout_s=30.0 + pace_s)
    finally:
        await worker.stop()
    if "error" in result:
        return result
    lat: dict[str, Any] = result.get("latency", {})
    return {**lat, "rate": cfg.rate, "enqueue_max_lag_ms": max_lag_s * 1000}


async def paced(n: int, rate: float, act: Callable[[int, float], Awaitable[None]]) -> float:
    """`act(i, scheduled)` for each i < n, open loop at `rate` a second, each at its scheduled `perf_counter` time or
    as soon after as the loop gets to it; returns the worst lag behind schedule, in seconds."""
    t0 = time.perf_counter()
    worst = 0.0
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            worst = max(worst, -delay)
        await act(i, scheduled)
    return worst


def _log_path(cfg: RunConfig, name: str) -> Path | None:
    return Path(cfg.log_dir) / f"{name}.log" if cfg.log_dir else None


# -- worker processes --------------------------------------------------------------------------------------------


class WorkerProcess:
    """A driver's worker in its own process (same interpreter as the run), read through its stdout markers."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path | None) -> None:
        self.proc = proc
        self.log_path = log_path
        self._ready = False

    @classmethod
    async def spawn(cls, module: str, cfg: dict[str, Any], *, log_path: Path | None = None) -> WorkerProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with log_file(log_path) as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                "worker",
                json.dumps(cfg),
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        return cls(proc, log_path)

    async def _line(self, timeout_s: float) -> str:
        if self.proc.stdout is None:
            raise RuntimeError("worker was spawned without a stdout pipe")
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise RuntimeError(f"worker exited before reporting{self._log_tail()}")
        return raw.decode(errors="replace").rstrip("\n")

    async def ready(self, timeout_s: float) -> None:
        """Wait for BENCH-READY (other output lines are skipped)."""
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            if (await self._line(max(0.01, deadline - time.monotonic()))) == READY:
                self._ready = True

    async def result(self, timeout_s: float) -> dict[str, Any]:
        """The worker's BENCH-RESULT, or {"error": ...} when it failed or took longer than `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        try:
            await self.ready(timeout_s)
            while True:
                line = await self._line(max(0.01, deadline - time.monotonic()))
                if line.startswith(RESULT):
                    parsed: dict[str, Any] = json.loads(line[len(RESULT) :])
                    return parsed
        except TimeoutError:
            return {"error": f"no result within {timeout_s:.0f} s{self._log_tail()}"}
        except RuntimeError as exc:
            return {"error": str(exc)}

    async def terminate(self) -> None:
        """SIGTERM: a run-until-stopped worker prints its result and exits."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        """Make sure the process is gone (it normally exits by itself after its result)."""
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        return f": {' | '.join(lines[-3:])[-400:]}" if lines else ""


async def _worker_main(driver: Driver, cfg: dict[str, Any]) -> dict[str, Any]:
    n = int(cfg["n"])
    probe = Probe(n, record_starts=bool(cfg.get("record_starts")))
    if n == 0:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, probe.stop)
    run = asyncio.create_task(
        driver.run_worker(cfg["url"], cfg["queue"], int(cfg["concurrency"]), probe, dict(cfg.get("options") or {}))
    )
    print(READY, flush=True)
    waiter = asyncio.create_task(probe.wait())
    timeout_s = float(cfg.get("timeout_s", 600))
    await asyncio.wait([run, waiter], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if run.done() and not waiter.done():
        exc = run.exception()
        return {"error": f"worker stopped: {_describe(exc) if exc else 'returned early'}"}
    if not waiter.done():
        return {"error": f"timed out after {timeout_s:.0f} s with {probe.finished}/{n} jobs finished"}
    return probe.result()


async def _worker_entry(driver: Driver, cfg: dict[str, Any]) -> None:
    try:
        result = await _worker_main(driver, cfg)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": _describe(exc)}
    print(RESULT + json.dumps(result), flush=True)
    # Exit from inside the loop: the figures are out, and shutting down would wait on every library's tasks and
    # threads (taskiq's receiver ignores cancellation, and asyncio.run would wait for it forever).
    os._exit(0)


def main(driver: Driver) -> None:
    """Command line of a driver module: `run '<json>'` (prints one JSON line) or `worker '<json>'`."""
    command, raw = sys.argv[1], json.loads(sys.argv[2])
    if command == "worker":
        driver.run_loop(_worker_entry(driver, raw))
    url = raw.pop("url")
    try:
        out = driver.run_loop(run_driver(driver, url, RunConfig.from_json(raw)))
    except Exception as exc:
        traceback.print_exc()
        out = {"system": driver.name, "error": _describe(exc)}
    print(json.dumps(out), flush=True)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def log_file(path: Path | None) -> BinaryIO:
    """A child's stderr file (appended to), or /dev/null; the child keeps its own copy of the descriptor."""
    return open(path or os.devnull, "ab")


def max_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's getrusage ru_maxrss survives fork and exec, so a spawned worker would report its parent's peak when
    that is larger; VmHWM is the peak of the process's own memory since exec. getrusage where there is no /proc.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
