"""Ingress: signed slash commands at a fixed rate, open loop, against the real web app in its own process."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench._server import free_port
from bench.harness import ROOT, log_file, paced
from bench.raw_http import RawHttpConnection, RawHttpError, build_request
from bench.stats import percentile
from slack_backend.queue import Queue, create_redis
from slack_backend.slack.signing import sign_request
from slack_backend.web.ingress import ACK_TEXT

SECRET = "bench-signing-secret-0123456789abcdef"
PREFIX = "bench-ingress"
QUEUE = "ai-responses"
# Requests the client sends first, unmeasured: they open the keep-alive connections and warm the app's lazy paths.
WARMUP = 50
# Senders, each with its own keep-alive connection. Requests the senders have not yet taken wait in an asyncio
# queue; one that waits still counts that wait, since latency runs from its scheduled send time. Through round 19
# the senders used httpx, whose pool kept its waiters in a list each finished request scanned: a backlog made each
# request cost the client more (45 ms of CPU a request against the server's 1.4), until the client set the pace.
CONNECTIONS = 32


def command_body(seq: int) -> bytes:
    """A /draft slash command form body like Slack's, with a trigger_id of its own (it is the job id)."""
    return urlencode(
        {
            "command": "/draft",
            "text": "Can you review my PR today? The deploy is blocked on it.",
            "team_id": "T0BENCH01",
            "team_domain": "bench",
            "channel_id": "C0CHAN0001",
            "channel_name": "general",
            "user_id": "U0USER0001",
            "user_name": "ana",
            "response_url": f"https://hooks.slack.com/commands/T0BENCH01/{1700000000000 + seq}/abcdefghijklmnop",
            "trigger_id": f"{seq}.773906753841.{uuid.uuid4().hex}",
            "api_app_id": "A0APP1",
        }
    ).encode()


def signed_requests(count: int, first_seq: int, port: int) -> list[bytes]:
    """Whole requests, signed and serialised up front so the load generator only sends (signatures last 5 min)."""
    out = []
    for seq in range(first_seq, first_seq + count):
        body = command_body(seq)
        headers = {**sign_request(SECRET, body), "Content-Type": "application/x-www-form-urlencoded"}
        out.append(build_request(f"127.0.0.1:{port}", "/slack/events", body, headers))
    return out


async def _start_server(redis_url: str, workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    cfg = {
        "port": port,
        "redis_url": redis_url,
        "prefix": PREFIX,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{workdir / 'ingress.db'}",
        "log_path": str(workdir / "ingress-app.log"),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log_file(workdir / "ingress-server.err") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ingress_server",
            json.dumps(cfg),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    if proc.stdout is None:
        raise RuntimeError("server spawned without a stdout pipe")
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"BENCH-READY"):
        raise RuntimeError(f"ingress server did not start (see {workdir / 'ingress-server.err'})")
    return proc, port


async def run_ingress(redis_url: str, workdir: Path, *, rate: float, duration_s: float) -> dict[str, Any]:
    """Send rate * duration_s signed requests open-loop; latency counts from each request's scheduled time."""
    total = int(rate * duration_s)
    proc, port = await _start_server(redis_url, workdir)
    requests = signed_requests(WARMUP + total, first_seq=int(time.time() * 1000), port=port)
    connections = [RawHttpConnection("127.0.0.1", port) for _ in range(CONNECTIONS)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    try:
        ack = ACK_TEXT.encode()

        async def send(connection: RawHttpConnection, i: int, scheduled: float) -> None:
            try:
                status, body = await asyncio.wait_for(connection.exchange(requests[i]), 10.0)
                ok = status == 200 and ack in body
                reason = "" if ok else f"HTTP {status}: {body[:80].decode(errors='replace')}"
            except RawHttpError as exc:
                reason = str(exc)
            except TimeoutError:
                await connection.close()
                reason = "timed out after 10 s"
            if scheduled >= 0:
                latencies.append(time.perf_counter() - scheduled)
            if reason:
                errors[reason] = errors.get(reason, 0) + 1

        # One after another, round the connections, so each is open before the clock starts.
        for i in range(WARMUP):
            await send(connections[i % CONNECTIONS], i, -1.0)
        errors.clear()
        backlog: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

        async def sender(connection: RawHttpConnection) -> None:
            while (item := await backlog.get()) is not None:
                await send(connection, *item)

        # No collector pauses in the load generator while it paces: they would show up as server latency.
        gc.collect()
        gc.freeze()
        gc.disable()
        senders = [asyncio.create_task(sender(connection)) for connection in connections]
        server_cpu0, client_cpu0 = process_cpu_s(proc.pid), process_cpu_s(os.getpid())

        async def hand_over(k: int, scheduled: float) -> None:
            backlog.put_nowait((WARMUP + k, scheduled))

        t0 = time.perf_counter()
        worst_lag_s = await paced(total, rate, hand_over)
        for _ in senders:
            backlog.put_nowait(None)
        await asyncio.gather(*senders)
        elapsed = time.perf_counter() - t0
        server_cpu = process_cpu_s(proc.pid) - server_cpu0
        client_cpu = process_cpu_s(os.getpid()) - client_cpu0
    finally:
        gc.enable()
        gc.unfreeze()
        for connection in connections:
            await connection.close()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    queued = await _waiting_jobs(redis_url)
    return {
        "rate": rate,
        "duration_s": duration_s,
        "requests": total,
        "achieved_rate": total / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "jobs_queued": queued,
        "client_max_lag_ms": worst_lag_s * 1000,
        "server_cpu_ms_per_request": server_cpu * 1000 / total,
        "client_cpu_ms_per_request": client_cpu * 1000 / total,
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc (0.0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); after the ")" they are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _waiting_jobs(redis_url: str) -> int:
    client = create_redis(redis_url)
    try:
        counts = await Queue(QUEUE, connection=client, prefix=PREFIX).counts()
        return sum(counts.values())
    finally:
        await client.aclose()
