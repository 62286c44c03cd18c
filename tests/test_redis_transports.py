"""REDIS_URL over a unix socket and over TLS (`rediss://`, certificate checked) reaches a real redis-server, and
the engine runs a job through it (its worker's blocking client included)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from slack_backend.config import load_settings
from slack_backend.queue import Job, JobState, Queue, Worker, create_redis
from slack_backend.queue.testing import free_port
from tests.support.engine import finished, running, wait_until
from tests.support.procs import spawn


@dataclass
class TransportServer:
    """A redis-server listening only on a unix socket and a TLS port (no plain TCP)."""

    socket: Path
    tls_port: int
    ca_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_certs(d: Path) -> None:
    """A throwaway CA, and a server certificate it signed for 127.0.0.1."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "server.crt", cwd=d)  # fmt: skip


@pytest.fixture
def transport_server(tmp_path: Path) -> Iterator[TransportServer]:
    """Started for the test and stopped at its end (if the test fails, the root conftest kills what spawn started)."""
    d = tmp_path / "redis-transports"
    d.mkdir()
    _make_certs(d)
    server = TransportServer(d / "redis.sock", free_port(), d / "ca.crt")
    args = ["redis-server", "--port", "0", "--unixsocket", str(server.socket), "--unixsocketperm", "700",
            "--tls-port", str(server.tls_port), "--bind", "127.0.0.1", "--tls-cert-file", str(d / "server.crt"),
            "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.crt"),
            "--tls-auth-clients", "no", "--save", "", "--dir", str(d)]  # fmt: skip
    proc = spawn(args, dict(os.environ), d / "redis.out")
    yield server
    proc.terminate()
    proc.wait(timeout=10)


async def _runs_a_job(redis_url: str, prefix: str) -> None:
    """Through settings as the app reads them: connect, add a job, let a Worker complete it."""
    settings = load_settings({"REDIS_URL": redis_url, "REDIS_PREFIX": prefix})
    client = create_redis(settings.redis_target())
    try:

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except RedisConnectionError:
                return False

        await wait_until(answers, timeout_s=10, every_s=0.05)  # the server is up
        queue = Queue("q", connection=client, prefix=prefix)
        added = await queue.add("j", {"n": 1})

        async def processor(job: Job) -> int:
            return int(job.data["n"]) + 1

        async with running(Worker(queue, processor, idle_block_s=0.5)):
            await wait_until(lambda: finished(queue, 1), every_s=0.05)
        job = await queue.get(added.job_id)
        assert job is not None
        assert (job.state, job.result) == (JobState.COMPLETED, 2)
    finally:
        await client.aclose()


async def test_a_unix_socket_url_runs_a_job(transport_server: TransportServer, prefix: str) -> None:
    """REDIS_URL=unix:///path/redis.sock: the client, the queue and the worker all work over the socket."""
    await _runs_a_job(f"unix://{transport_server.socket}", prefix)


async def test_a_rediss_url_runs_a_job_and_checks_the_servers_certificate(
    transport_server: TransportServer, prefix: str
) -> None:
    """rediss:// with the CA that signed the server's certificate works; without it the connection is refused."""
    base = f"rediss://127.0.0.1:{transport_server.tls_port}/0"
    await _runs_a_job(f"{base}?ssl_ca_certs={transport_server.ca_file}", prefix)
    # The system's CAs do not know this throwaway CA: verification is on, so the handshake fails.
    unverified = create_redis(load_settings({"REDIS_URL": base, "REDIS_PREFIX": prefix}).redis_target())
    try:
        with pytest.raises(RedisConnectionError, match=r"(?i)certificate"):
            await unverified.ping()
    finally:
        await unverified.aclose()
