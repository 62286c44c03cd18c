"""Partitions end, across a real link: a worker process in its own network namespace, joined to Redis by a veth
pair, is cut off (the link taken down) for longer than its lease, then the link returns.

Checked from outside: the processor's own record of every run (a file, which the cut cannot touch), what Redis
holds, the worker's log, and whether its process still runs. Where namespaces cannot be made (not root, no
iproute2), the fault proxy's blackhole stands in and the test prints which one ran; it is never skipped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slack_backend.queue import BulkJob, Job, JobOptions, JobState, Queue, Worker, create_redis
from tests.support.engine import running, wait_until
from tests.support.fault_proxy import FaultProxy
from tests.support.netns import netns_unavailable, veth_namespace
from tests.support.procs import ROOT, spawn
from tests.support.sentinel_cluster import RedisProc, overlapping_runs

LEASE_MS = 5000
# The short job ends inside its lease (its completion is written while cut off and must be refused later); the
# long one outlives its lease (it must be stopped when the lease ends, before the job is handed out again).
SHORT_MS = 4000
LONG_MS = 8000
RESCUER_JOB_S = 1.0


@dataclass
class Cut:
    """How the worker reaches Redis, and the switch that cuts and restores that path."""

    how: str
    worker_url: str
    cut: Callable[[], None]
    restore: Callable[[], None]
    exec_prefix: list[str]


@contextmanager
def _partition(kind: str, tmp_path: Path) -> Iterator[tuple[Cut, RedisProc]]:
    """A redis-server and a cuttable path to it: a veth link into a namespace, or the proxy's blackhole."""
    with ExitStack() as stack:
        why_not = netns_unavailable() if kind == "netns" else "the proxy variant"
        if why_not is None:
            link = stack.enter_context(veth_namespace())
            server = RedisProc(tmp_path / "redis", ["--bind", "127.0.0.1", link.host_addr, "--protected-mode", "no"])
            server.start()
            stack.callback(server.stop)
            url = f"redis://{link.host_addr}:{server.port}/0"
            how = f"netns veth link down ({link.ns_addr} in {link.name} -> {link.host_addr})"
            yield Cut(how, url, link.cut, link.restore, link.exec_prefix()), server
            return
        server = RedisProc(tmp_path / "redis", [])
        server.start()
        stack.callback(server.stop)
        # No worker URL: the caller puts a fault proxy (which needs its event loop) in front of this server.
        how = "proxy blackhole" + (f" (standing in for netns: {why_not})" if kind == "netns" else "")
        yield Cut(how, "", _nothing, _nothing, []), server


def _nothing() -> None:
    return None


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["netns", "proxy"])
async def test_a_worker_cut_off_past_its_lease_resumes_without_restart_and_never_runs_beside_the_new_owner(
    kind: str, tmp_path: Path
) -> None:
    """A worker process cut off from Redis for longer than its lease: it stops the run it cannot renew, its late
    completion and release are refused by fencing, the jobs are run by the new lease holder and never twice at
    once, none is lost, and it takes new work within lease + 5 s of the link returning, never restarted."""
    with _partition(kind, tmp_path) as (cut, server):
        proxy: FaultProxy | None = None
        if not cut.worker_url:
            # The proxy variant: the proxy runs in this test's event loop.
            proxy = FaultProxy("127.0.0.1", server.port)
            await proxy.start()
            cut = Cut(cut.how, proxy.url, proxy.blackhole, proxy.heal, [])
        try:
            await _scenario(cut, server, tmp_path)
        finally:
            if proxy is not None:
                await proxy.stop()


async def _scenario(cut: Cut, server: RedisProc, tmp_path: Path) -> None:
    prefix = f"np{time.time_ns() % 10**9}"
    runs_file = tmp_path / "runs.jsonl"
    log_path = tmp_path / "worker.log"
    cfg = {
        "url": cut.worker_url,
        "prefix": prefix,
        "queue": "q",
        "concurrency": 2,
        "lease_ms": LEASE_MS,
        "stalled_ms": 60_000,  # the cut-off worker's own stall check plays no part
        "idle_block_s": 2.0,
        "runs_file": str(runs_file),
        "result_worker": True,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = spawn([*cut.exec_prefix, sys.executable, "-m", "tests.support.worker_proc", json.dumps(cfg)], env, log_path)
    client = create_redis(f"redis://127.0.0.1:{server.port}/0")
    queue = Queue("q", connection=client, prefix=prefix)
    rescuer_runs: list[dict[str, Any]] = []

    async def rescue(job: Job) -> dict[str, Any]:
        run: dict[str, Any] = {"id": job.id, "start_ms": int(time.time() * 1000), "finished": False}
        rescuer_runs.append(run)
        try:
            await asyncio.sleep(RESCUER_JOB_S)
            run["finished"] = True
        finally:
            run["end_ms"] = int(time.time() * 1000)
        return {"ok": True, "worker": "rescuer"}

    rescuer = Worker(queue, rescue, lease_ms=LEASE_MS, stalled_interval_ms=200, idle_block_s=1.0)
    try:
        await wait_until(_workers_beating(queue, 1), timeout_s=30)
        jobs = [("long", LONG_MS), ("short", SHORT_MS)]
        await queue.add_bulk([BulkJob("x", {"ms": ms}, JobOptions(job_id=job_id)) for job_id, ms in jobs])
        await wait_until(_held(queue, ["long", "short"], lambda w: w != rescuer.id), timeout_s=10)
        cut.cut()
        cut_at = time.monotonic()
        try:
            async with running(rescuer):
                # Both leases run out unrenewed; the rescuer's stall check recovers the jobs and runs them.
                await wait_until(_held(queue, ["long", "short"], lambda w: w == rescuer.id), timeout_s=30)
                taken_s = time.monotonic() - cut_at
        finally:
            cut.restore()
        restored_wall = time.time()
        cut_s = time.monotonic() - cut_at
        await wait_until(_completed(queue, ["long", "short"]), timeout_s=10)
        await queue.add("x", {"ms": 10}, job_id="after")
        await wait_until(_completed(queue, ["after"]), timeout_s=LEASE_MS / 1000 + 10)
        await wait_until(lambda: _refusals_logged(log_path, 2), timeout_s=LEASE_MS / 1000 + 5)
        results = {job_id: (await queue.get(job_id)) for job_id in ("long", "short", "after")}
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        await client.aclose()

    cut_runs = [{**r, "by": "cut"} for r in map(json.loads, runs_file.read_text().splitlines())]
    runs = cut_runs + [{**r, "by": "rescuer"} for r in rescuer_runs]
    refused = _refusals(log_path)
    after = next(r for r in cut_runs if r["id"] == "after")
    resumed_s = after["start_ms"] / 1000 - restored_wall
    lost = sum(1 for j in results.values() if j is None or j.state is not JobState.COMPLETED)
    print(
        f"\npartition by: {cut.how}; cut {cut_s:.1f} s (lease {LEASE_MS} ms), jobs taken over {taken_s:.1f} s into "
        f"the cut; late finishes refused: {refused}; jobs lost {lost}; run twice at once {overlapping_runs(runs)}; "
        f"cut-off worker took new work {resumed_s:.2f} s after the link returned; processes restarted "
        f"{0 if alive else 1}"
    )
    ordered = sorted(runs, key=_start)
    by_job = {job: [(r["by"], r["finished"]) for r in ordered if r["id"] == job] for job in ("long", "short", "after")}
    assert by_job["long"] == [("cut", False), ("rescuer", True)], "the unrenewed long run was stopped at its lease"
    assert by_job["short"] == [("cut", True), ("rescuer", True)]
    assert by_job["after"] == [("cut", True)]
    assert overlapping_runs(runs) == 0, "two runs of one job at once"
    assert sorted(refused) == [("long", "release"), ("short", "complete")], "late outcomes refused by fencing"
    assert lost == 0
    for job_id in ("long", "short"):
        job = results[job_id]
        assert job is not None
        assert job.result == {"ok": True, "worker": "rescuer"}  # the lease holder's result stands
    assert cut_s * 1000 > LEASE_MS
    assert resumed_s <= LEASE_MS / 1000 + 5
    assert alive, "the cut-off worker process died"
    assert exit_code == 0


def _start(run: dict[str, Any]) -> int:
    return int(run["start_ms"])


def _workers_beating(queue: Queue, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await queue.workers()) >= n

    return check


def _held(queue: Queue, job_ids: list[str], by: Callable[[str], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        jobs = [await queue.get(job_id) for job_id in job_ids]
        return all(j is not None and j.state is JobState.ACTIVE and j.worker and by(j.worker) for j in jobs)

    return check


def _completed(queue: Queue, job_ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        jobs = [await queue.get(job_id) for job_id in job_ids]
        return all(j is not None and j.state is JobState.COMPLETED for j in jobs)

    return check


def _refusals(log_path: Path) -> list[tuple[str, str]]:
    """(job id, call) of every finishing call the worker saw refused because its lease was lost."""
    found = []
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "lease lost; result discarded":
            found.append((str(entry.get("job_id")), str(entry.get("action"))))
    return found


async def _refusals_logged(log_path: Path, n: int) -> bool:
    return len(_refusals(log_path)) >= n
