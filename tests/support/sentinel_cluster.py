"""Real replicated Redis on loopback ports for tests: a master, replicas and Sentinels, or a Redis Cluster."""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import json
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from slack_backend.queue import Queue, RedisTarget, create_redis
from tests.support.procs import spawn_worker
from tests.support.redis_server import free_port

START_TIMEOUT_S = 15.0
# redis-py (8.1) leaves some connections it opened during a failover to the garbage collector, which warns after the
# test's loop has closed: Sentinel sockets, and a ClusterNode dropped from the Cluster's topology with a connection
# still open ("Unclosed ClusterNode", once in round 19's fresh-clone run). Known, not ours; a test so marked keeps
# its own assertions.
LEAKS_ON_FAILOVER = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
MASTER_NAME = "mymaster"
# Short enough that a failover fits in a test, long enough that a loaded 2-core machine is not taken for dead.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
CLUSTER_NODE_TIMEOUT_MS = 2000


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed; apt-get install redis-server (it brings redis-cli too)")
    return found


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis refuses ports above 55535 in a cluster."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait_until(
    check: object, what: str, timeout_s: float = START_TIMEOUT_S, *, seen: Callable[[], str] | None = None
) -> None:
    """Poll `check` until it holds; on timeout, the error says what `seen` reports of the state last observed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if callable(check) and check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}" + (f"; last seen: {seen()}" if seen else ""))
        time.sleep(0.05)


class RedisProc:
    """One redis-server (data node or Sentinel) with its own directory and arguments; killable and restartable."""

    def __init__(self, workdir: Path, args: list[str], *, port: int | None = None, sentinel: bool = False) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.args = args
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)

    def start(self) -> None:
        """Start the process and return once it answers PING."""
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        common += ["--logfile", str(self.workdir / "redis.log")]
        if self.sentinel:
            argv = [_binary("redis-server"), str(self.workdir / "sentinel.conf"), "--sentinel", *common]
        else:
            argv = [_binary("redis-server"), *common, "--save", "", "--maxmemory-policy", "noeviction", *self.args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited; see {self.workdir / 'redis.log'}")
            with self.client() as c:
                return bool(c.ping())

        _wait_until(answers, f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the host is gone, nothing is written or handed over."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class SentinelSet:
    """A master, `replicas` replicas and `sentinels` Sentinels (quorum 2) on loopback ports."""

    def __init__(
        self, workdir: Path, *, replicas: int = 1, sentinels: int = 3, sync_delay_s: int | None = None
    ) -> None:
        """`sync_delay_s` sets `repl-diskless-sync-delay` on the data nodes (Redis' default waits 5 s before a
        replica's first sync: failover figures should include it; tests that only need a synced replica skip it)."""
        extra = [] if sync_delay_s is None else ["--repl-diskless-sync-delay", str(sync_delay_s)]
        self.master = RedisProc(workdir / "master", extra)
        self.replicas = [
            RedisProc(workdir / f"replica{i}", ["--replicaof", "127.0.0.1", str(self.master.port), *extra])
            for i in range(replicas)
        ]
        self.sentinels = [RedisProc(workdir / f"sentinel{i}", [], sentinel=True) for i in range(sentinels)]

    @property
    def data_nodes(self) -> list[RedisProc]:
        return [self.master, *self.replicas]

    def replicate_through(self, port: int) -> None:
        """Before start: the replicas reach the master through `port` (a fault proxy) instead of directly."""
        for replica in self.replicas:
            at = replica.args.index("--replicaof")
            replica.args[at + 2] = str(port)

    def target(self, *, url: str = "redis://127.0.0.1:6379/0") -> RedisTarget:
        return RedisTarget(url=url, sentinels=self.sentinel_addresses(), sentinel_master=MASTER_NAME)

    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", s.port) for s in self.sentinels)

    def start(self) -> None:
        """Start every node, wait until the replicas are in sync and every Sentinel sees them all."""
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for node in self.sentinels:
            conf = (
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            (node.workdir / "sentinel.conf").write_text(conf)
            node.start()

        def synced() -> bool:
            with self.master.client() as c:
                info = c.info("replication")
            return int(info["connected_slaves"]) == len(self.replicas) and all(
                info[f"slave{i}"]["state"] == "online" for i in range(len(self.replicas))
            )

        _wait_until(synced, "replicas in sync")

        views: dict[int, str] = {}

        def known() -> bool:
            ready = True
            for node in self.sentinels:
                try:
                    with node.client() as c:
                        fields = c.sentinel_master(MASTER_NAME)
                except (redis.RedisError, OSError) as exc:
                    views[node.port] = f"no answer ({exc})"
                    ready = False
                    continue
                views[node.port] = (
                    f"{fields['num-slaves']} replicas, {fields['num-other-sentinels']} other sentinels, "
                    f"flags {fields['flags']}"
                )
                ready = ready and (
                    int(fields["num-slaves"]) == len(self.replicas)
                    and int(fields["num-other-sentinels"]) == len(self.sentinels) - 1
                )
            return ready

        _wait_until(
            known,
            "sentinels to see the replicas and each other",
            timeout_s=30,
            seen=lambda: "; ".join(f"sentinel :{port}: {view}" for port, view in sorted(views.items())),
        )

    def master_ports(self) -> list[int]:
        """The master port each Sentinel that answers names now (one that missed a switch may lag seconds)."""
        ports = []
        for node in self.sentinels:
            try:
                with node.client() as c:
                    _host, port = c.sentinel_get_master_addr_by_name(MASTER_NAME)
                    ports.append(int(port))
            except (redis.RedisError, OSError):
                continue
        return ports

    def current_master_port(self) -> int:
        """The master port most Sentinels name now (quorum 2 of 3; a single Sentinel's view may be stale)."""
        ports = self.master_ports()
        if not ports:
            raise RuntimeError("no Sentinel answered")
        return collections.Counter(ports).most_common(1)[0][0]

    def stop(self) -> None:
        for node in [*self.sentinels, *self.replicas, self.master]:
            node.stop()


class RedisClusterSet:
    """A Redis Cluster of `masters` masters with one replica each, built with `redis-cli --cluster create`."""

    def __init__(self, workdir: Path, *, masters: int = 3, sync_delay_s: int | None = None) -> None:
        """`sync_delay_s` sets `repl-diskless-sync-delay` (Redis waits 5 s by default before a replica's first
        sync, which a failover's figures should include; a test that only needs replicas attached can skip it)."""
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
            "--appendonly",
            "no",
        ]
        if sync_delay_s is not None:
            args += ["--repl-diskless-sync-delay", str(sync_delay_s)]
        self.nodes = [RedisProc(workdir / f"node{i}", args, port=cluster_port()) for i in range(masters * 2)]

    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", n.port) for n in self.nodes)

    def target(self) -> RedisTarget:
        return RedisTarget(cluster_nodes=self.addresses()[:3])

    def start(self) -> None:
        """Start the nodes, join them with one replica per master, and wait until every node says `ok`."""
        for node in self.nodes:
            node.start()
        hosts = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [_binary("redis-cli"), "--cluster", "create", *hosts, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout_s: float = 30) -> None:
        def ok() -> bool:
            for node in self.nodes:
                if node.proc is None:
                    continue
                with node.client() as c:
                    info = c.execute_command("CLUSTER", "INFO")
                    text = info if isinstance(info, str) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    if len(c.execute_command("CLUSTER", "SLOTS")) != 3:
                        return False
            return True

        _wait_until(ok, "cluster state ok on every node", timeout_s=timeout_s)

    def node_by_port(self, port: int) -> RedisProc:
        return next(n for n in self.nodes if n.port == port)

    def owner(self, key: str, *, ask_not: RedisProc | None = None) -> tuple[RedisProc, RedisProc | None]:
        """The master that owns `key`'s slot now, and one of its replicas (None while it has none it knows).

        `ask_not`: a node not to ask (one just restarted still names itself for its old slots until gossip corrects it).
        """
        node = next(n for n in self.nodes if n.proc is not None and n is not ask_not)
        with node.client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for entry in c.execute_command("CLUSTER", "SLOTS"):
                start, end, master, *replicas = entry
                if start <= slot <= end:
                    replica = self.node_by_port(int(replicas[0][1])) if replicas else None
                    return self.node_by_port(int(master[1])), replica
        raise RuntimeError(f"no node owns the slot of {key}")

    def owner_and_replica(self, key: str) -> tuple[RedisProc, RedisProc]:
        """The master that owns `key`'s slot and one of its replicas, waiting (up to 15 s) for it to have one."""
        found: list[tuple[RedisProc, RedisProc]] = []

        def has_replica() -> bool:
            master, replica = self.owner(key)
            if replica is not None:
                found.append((master, replica))
            return replica is not None

        _wait_until(has_replica, f"a replica for the slot of {key}")
        return found[-1]

    def replica_of(self, master: RedisProc) -> RedisProc:
        """A replica whose replication link to `master` is up (from INFO, which knows at once; CLUSTER SLOTS lists
        replicas only once gossip has spread, about 8 s after the cluster is made)."""
        found: list[RedisProc] = []

        def linked() -> bool:
            for node in self.nodes:
                if node.proc is None or node is master:
                    continue
                with node.client() as c:
                    info = c.info("replication")
                ours = info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port
                if ours and info.get("master_link_status") == "up":
                    found.append(node)
                    return True
            return False

        _wait_until(linked, f"a replica linked to port {master.port}")
        return found[-1]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class FailoverFigures:
    """What a failover under load cost: the measures docs/scaling.md reports."""

    label: str
    offered_per_s: float
    acked: int
    refused: int
    lost: int
    run_twice: int
    run_twice_at_once: int
    adds_resume_s: float | None
    work_resumes_s: float | None
    longest_pause_s: float
    longest_wait_s: float
    stalls_recovered: int
    restarted: int
    add_p50_ms: float
    add_p99_ms: float
    refusals: dict[str, str]

    def line(self) -> str:
        def secs(value: float | None) -> str:
            return "never" if value is None else f"{value:.2f} s"

        return (
            f"[{self.label}] offered {self.offered_per_s:.0f} adds/s: acknowledged {self.acked}, refused "
            f"{self.refused}, lost {self.lost}, run twice {self.run_twice} (at once {self.run_twice_at_once}); "
            f"adds acknowledged again after "
            f"{secs(self.adds_resume_s)}, jobs start again after {secs(self.work_resumes_s)} (longest pause in starts "
            f"{self.longest_pause_s:.2f} s, longest wait of an acknowledged job {self.longest_wait_s:.2f} s, "
            f"{self.stalls_recovered} recovered by the stall check); worker processes "
            f"restarted {self.restarted}; add latency p50 {self.add_p50_ms:.1f} ms, p99 {self.add_p99_ms:.1f} ms"
            + (f"; refusals: {self.refusals}" if self.refusals else "")
        )


def overlapping_runs(runs: list[dict[str, Any]]) -> int:
    """How many jobs had two runs whose [start_ms, end_ms] intervals overlap (two owners at once)."""
    by_job: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        by_job.setdefault(str(run["id"]), []).append((int(run["start_ms"]), int(run["end_ms"])))
    found = 0
    for spans in by_job.values():
        spans.sort()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            found += 1
    return found


def _stalls_logged(workdir: Path) -> int:
    """How many jobs the workers' stall checks recovered (leases that ran out with nobody running the job)."""
    return sum(path.read_text().count("stalled job recovered") for path in workdir.glob("worker*.log"))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def failover_under_load(
    *,
    label: str,
    target: RedisTarget,
    worker_cfg: dict[str, Any],
    workdir: Path,
    fault: Callable[[], None],
    after_fault: Callable[[], None] | None = None,
    rate_per_s: int,
    duration_s: float,
    fault_at_s: float,
    min_replicas_ack: int = 0,
    workers: int = 2,
    drain_s: float = 30.0,
    prefix: str | None = None,
) -> FailoverFigures:
    """Enqueue at `rate_per_s` with worker processes busy, run `fault` at `fault_at_s`, then count the cost.

    Each add carries its own id, so an acknowledged job is known by name; the workers append every run to a file
    (not to Redis, which the fault may roll back). After the load, the workers get `drain_s` to run what is left.
    """
    prefix = prefix or f"fo{uuid.uuid4().hex[:8]}"
    runs_files = [workdir / f"runs{i}.jsonl" for i in range(workers)]
    procs = [
        spawn_worker({**worker_cfg, "prefix": prefix, "queue": "q", "runs_file": str(path)}, workdir / f"worker{i}.log")
        for i, path in enumerate(runs_files)
    ]
    client = create_redis(target)
    queue = Queue("q", connection=client, prefix=prefix, min_replicas_ack=min_replicas_ack)
    acked: dict[str, float] = {}
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    refused = 0
    reasons: dict[str, str] = {}

    async def add(job_id: str) -> None:
        nonlocal refused
        sent = time.monotonic()
        sent_wall = time.time()
        try:
            async with asyncio.timeout(10):
                await queue.add("load", {"n": job_id}, job_id=job_id)
        except Exception as exc:
            # redis-py can also raise AttributeError from a connection a cluster re-map closed mid-connect.
            refused += 1
            reasons.setdefault(type(exc).__name__, f"first at {time.monotonic() - start:.1f} s: {exc}"[:200])
            return
        latencies.append((time.monotonic() - sent) * 1000)
        acked[job_id] = time.time()
        sent_at[job_id] = sent_wall

    try:
        # The clock starts once every worker beats: starting Python processes would otherwise stall the first adds.
        async with asyncio.timeout(60):
            while len(await queue.workers()) < workers:  # noqa: ASYNC110 - heartbeats of other processes
                await asyncio.sleep(0.1)
        tasks: list[asyncio.Task[None]] = []
        fault_wall: float | None = None
        fault_task: asyncio.Task[None] | None = None
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < duration_s:
            if fault_wall is None and elapsed >= fault_at_s:
                fault_wall = time.time()
                fault()
                if after_fault is not None:
                    fault_task = asyncio.create_task(asyncio.to_thread(after_fault))
            while n < elapsed * rate_per_s:
                tasks.append(asyncio.create_task(add(f"j{n}")))
                n += 1
            await asyncio.sleep(0.005)
        load_end_wall = time.time()
        await asyncio.gather(*tasks)
        if fault_task is not None:
            await fault_task
        assert fault_wall is not None

        def runs() -> list[dict[str, Any]]:
            found = []
            for path in runs_files:
                if path.exists():
                    found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return found

        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and not set(acked) <= {r["id"] for r in runs() if r["finished"]}:  # noqa: ASYNC110 - files of other processes
            await asyncio.sleep(0.2)
        done = runs()
        counts: dict[str, int] = {}
        for run in done:
            if run["finished"]:  # a run stopped half-way (its lease lost) did not do the job
                counts[run["id"]] = counts.get(run["id"], 0) + 1
        after = sorted(r["start_ms"] / 1000 for r in done if r["start_ms"] / 1000 > fault_wall)
        during = [t for t in after if t <= load_end_wall]
        first_start: dict[str, float] = {}
        for run in done:
            first_start[run["id"]] = min(first_start.get(run["id"], float("inf")), run["start_ms"] / 1000)
        waits = [first_start[job_id] - t for job_id, t in acked.items() if job_id in first_start]
        # An add sent before the fault and answered after it says nothing about recovery.
        acked_after = [t for job_id, t in acked.items() if sent_at[job_id] > fault_wall]
        restarted = sum(1 for p in procs if p.poll() is not None)
        return FailoverFigures(
            label=label,
            offered_per_s=n / duration_s,
            acked=len(acked),
            refused=refused,
            lost=len(set(acked) - set(counts)),
            run_twice=sum(1 for c in counts.values() if c > 1),
            run_twice_at_once=overlapping_runs(done),
            adds_resume_s=min(acked_after) - fault_wall if acked_after else None,
            work_resumes_s=min(after) - fault_wall if after else None,
            longest_pause_s=max((b - a for a, b in itertools.pairwise([fault_wall, *during])), default=0.0),
            longest_wait_s=max(waits, default=0.0),
            stalls_recovered=_stalls_logged(workdir),
            restarted=restarted,
            add_p50_ms=_pct(latencies, 0.5),
            add_p99_ms=_pct(latencies, 0.99),
            refusals=reasons,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()
                await asyncio.to_thread(p.wait)
        await client.aclose()
        # redis-py can drop a Sentinel connection opened during the outage without closing it; collect it here,
        # inside the test (whose mark says so), not at the end of the session.
        gc.collect()
