"""Real replicated Redis on loopback ports for tests: a master, replicas and Sentinels, or a Redis Cluster."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from slack_backend.queue import RedisTarget
from tests.support.redis_server import free_port

START_TIMEOUT_S = 15.0
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


def _wait_until(check: object, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if callable(check) and check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
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

    def __init__(self, workdir: Path, *, replicas: int = 1, sentinels: int = 3) -> None:
        self.master = RedisProc(workdir / "master", [])
        self.replicas = [
            RedisProc(workdir / f"replica{i}", ["--replicaof", "127.0.0.1", str(self.master.port)])
            for i in range(replicas)
        ]
        self.sentinels = [RedisProc(workdir / f"sentinel{i}", [], sentinel=True) for i in range(sentinels)]

    @property
    def data_nodes(self) -> list[RedisProc]:
        return [self.master, *self.replicas]

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

        def known() -> bool:
            for node in self.sentinels:
                with node.client() as c:
                    fields = c.sentinel_master(MASTER_NAME)
                    if int(fields["num-slaves"]) != len(self.replicas):
                        return False
                    if int(fields["num-other-sentinels"]) != len(self.sentinels) - 1:
                        return False
            return True

        _wait_until(known, "sentinels to see the replicas and each other", timeout_s=30)

    def current_master_port(self) -> int:
        """The master port the Sentinels name now."""
        for node in self.sentinels:
            try:
                with node.client() as c:
                    _host, port = c.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return int(port)
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no Sentinel answered")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.replicas, self.master]:
            node.stop()


class RedisClusterSet:
    """A Redis Cluster of `masters` masters with one replica each, built with `redis-cli --cluster create`."""

    def __init__(self, workdir: Path, *, masters: int = 3) -> None:
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

    def owner_and_replica(self, key: str) -> tuple[RedisProc, RedisProc]:
        """The master that owns `key`'s slot now, and one of its replicas."""
        with self.nodes[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for entry in c.execute_command("CLUSTER", "SLOTS"):
                start, end, master, *replicas = entry
                if start <= slot <= end:
                    return self.node_by_port(int(master[1])), self.node_by_port(int(replicas[0][1]))
        raise RuntimeError(f"no node owns the slot of {key}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
