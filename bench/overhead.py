"""Our overhead on a draft: `python -m bench.overhead [--rate R] [--seconds S] [--model-ms M]`.

The real service as users start it (`slack-backend run`: web app and worker in one process) against a redis-server
of its own, with the loopback fakes of Slack and Anthropic (tests/fakes/) in this process. Signed `/draft` slash
commands go in open loop at 5 a second; the fake model answers each after a fixed delay. Per request:

    overhead = (draft received at the response_url) - (request sent) - (the model's own time)

"Request sent" is the moment the client starts writing the request to the socket (httpx's trace), not before the
client built it; "the model's own time" is from the fake model's receipt of the request to its answer being ready,
as its clock saw it: the fixed delay plus however late the fake's timer woke (0.6-0.9 ms here), which is the
model's, not ours. Where that time went, from timestamps on one machine: the client's send, the job record's
`created_ms` and `processed_ms` (Redis's clock, when the job entered the queue and when a worker started it), the
fake model's receive and answer clocks, and the fake response_url's receive clock. Also the service process's CPU
time (user + sys, all its threads) over the measured requests, per draft: the figure a loaded machine moves least.
Results: a table on stdout, and `bench/results/overhead.md` with `overhead.png` (a stacked chart: where each
request's time went, the model's delay left out).

`--split` runs production's layout instead: `slack-backend serve` and `slack-backend worker` as two processes (the
CPU figure is their sum). `--database-url postgresql+asyncpg://user@host/db` runs the service on a fresh PostgreSQL
database made on that server for the run and dropped after it (production's backend); the default is a SQLite file
in a temp directory. `--oauth` runs the service in multi-workspace mode, as production serves many workspaces: no
bot token in the settings, the workspace's installation (its bot token, and the requester's own user token, both
encrypted) in the database, so every draft looks both up.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import httpx
from aiohttp import web
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from tests.fakes.anthropic_server import MESSAGES_PATH, Behaviour, FakeAnthropic
from tests.fakes.slack_server import FakeSlack

from bench._server import BenchRedis, free_port
from bench.harness import ROOT
from bench.stats import percentile
from slack_backend.queue import JobState, Queue, create_redis
from slack_backend.slack.signing import sign_request
from slack_backend.store import TokenCipher, create_engine, create_tables, installation_store

SECRET = "bench-overhead-signing-secret-0123456789"
PREFIX = "bench-overhead"
RESULTS = ROOT / "bench" / "results"
# A /draft command reads no thread and sends no progress note (its ack says it is drafting), so "before the model"
# holds the job's records (audit, saved-draft check, quota), the prompt and the model client's own work.
SEGMENTS = ("ingress to enqueued", "wait for a slot", "before the model", "delivery")
WARMUP = 10
TEAM = "T0BENCH01"
USER = "U0USER0001"
CLIENT_ID = "1111.2222"


class ClockedSlack(FakeSlack):
    """The fake Slack (of the workspace the commands come from), also noting when (time.monotonic) each
    response_url post arrived."""

    def __init__(self) -> None:
        super().__init__(team_id=TEAM)
        self.post_times: dict[str, list[tuple[float, bool]]] = {}

    async def _response_url(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        response = await super()._response_url(request)
        posts = self.response_posts.get(request.match_info["response_id"], [])
        draft = bool(posts) and "blocks" in posts[-1]
        self.post_times.setdefault(request.match_info["response_id"], []).append((arrived, draft))
        return response


class ClockedAnthropic(FakeAnthropic):
    """The fake model, also noting when (time.monotonic) each Messages answer was ready.

    `answered_s[i]` belongs to `requests[i]`: the model's own time for that request is `answered_s[i]` minus its
    `received_s` (the fixed delay, and however late the fake's timer woke).
    """

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self.answered_s: dict[int, float] = {}

    async def _record(self, request: web.Request) -> dict[str, Any] | None:
        body = await super()._record(request)
        request[_RECORD_INDEX] = len(self.requests) - 1
        return body

    async def _messages(self, request: web.Request) -> web.Response:
        response = await super()._messages(request)
        if _RECORD_INDEX in request:
            self.answered_s[request[_RECORD_INDEX]] = time.monotonic()
        return response


_RECORD_INDEX = "bench_record_index"


def on_wire(sent: Callable[[float], None]) -> dict[str, Any]:
    """httpx request extensions calling `sent(time.monotonic())` as the request's first byte goes to the socket:
    the request counts as sent then, not while the client was still building it."""

    async def trace(event: str, _info: dict[str, object]) -> None:
        if event == "http11.send_request_headers.started":
            sent(time.monotonic())

    return {"trace": trace}


@dataclass
class Sent:
    seq: int
    send_s: float
    ack_s: float = 0.0
    status: int = 0

    def sent_at(self, when_s: float) -> None:
        self.send_s = when_s


def command_body(seq: int, response_url: str) -> bytes:
    """A /draft slash command like Slack's; the text carries the sequence number, so the model's request names it."""
    return urlencode(
        {
            "command": "/draft",
            "text": f"request {seq}: can you review my PR today? The deploy is blocked on it.",
            "team_id": TEAM,
            "team_domain": "bench",
            "channel_id": "C0CHAN0001",
            "channel_name": "general",
            "user_id": USER,
            "user_name": "ana",
            "response_url": response_url,
            "trigger_id": f"{seq}.773906753841.{uuid.uuid4().hex}",
            "api_app_id": "A0APP1",
        }
    ).encode()


async def wait_ready(base_url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> None:
    """Return once the service answers /readyz with 200; raise if a process exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.poll() is not None:
                    command = " ".join(str(arg) for arg in cast(list[str], proc.args))
                    raise RuntimeError(f"{command} exited {proc.returncode} before it was ready")
            try:
                if (await client.get(f"{base_url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"slack-backend was not ready within {timeout_s:g} s")


async def send_all(base_url: str, slack: ClockedSlack, rate: float, count: int, first: int = 0) -> list[Sent]:
    """Open loop: request i is sent at start + i / rate, whatever the earlier ones are doing."""
    sent = [Sent(seq, 0.0) for seq in range(first, first + count)]
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:

        async def one(item: Sent, at: float) -> None:
            body = command_body(item.seq, slack.response_url(f"r{item.seq}"))
            headers = {**sign_request(SECRET, body), "Content-Type": "application/x-www-form-urlencoded"}
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            response = await client.post(
                "/slack/events", content=body, headers=headers, extensions=on_wire(item.sent_at)
            )
            item.ack_s = time.monotonic()
            item.status = response.status_code

        start = time.monotonic() + 0.2
        await asyncio.gather(*(one(item, start + (item.seq - first) / rate) for item in sent))
    return sent


async def wait_delivered(slack: ClockedSlack, seqs: range, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(any(draft for _, draft in slack.post_times.get(f"r{seq}", [])) for seq in seqs)
        if done == len(seqs):
            return
        await asyncio.sleep(0.1)


async def job_times(redis_url: str) -> dict[int, tuple[int, int]]:
    """created_ms and processed_ms of each started job, by the request's sequence number.

    Active ones too: a draft reaches the response_url before its job writes the delivered mark and completes, so the
    last job can still be active when its draft has arrived.
    """
    client = create_redis(redis_url)
    try:
        queue = Queue("ai-responses", connection=client, prefix=PREFIX)
        jobs = [job for state in (JobState.COMPLETED, JobState.ACTIVE) for job in await queue.get_jobs(state, 0, -1)]
    finally:
        await client.aclose()
    out: dict[int, tuple[int, int]] = {}
    for job in jobs:
        seq = int(str(job.data["response_url"]).rsplit("/r", 1)[1])
        out[seq] = (job.created_ms, job.processed_ms or 0)
    return out


def sequence_in(text: str) -> int | None:
    """The sequence number a request's text carries ("request 12: ..."), or None."""
    at = text.find("request ")
    digits = text[at + 8 :].split(":", 1)[0] if at >= 0 else ""
    return int(digits) if digits.isdigit() else None


def model_times(claude: ClockedAnthropic) -> dict[int, tuple[float, float]]:
    """When (time.monotonic) the fake model received each request and had its answer ready, by the sequence number
    in its text."""
    out: dict[int, tuple[float, float]] = {}
    for index, request in enumerate(claude.requests):
        seq = sequence_in(str(request.body)) if request.path == MESSAGES_PATH else None
        if seq is not None and index in claude.answered_s:
            out.setdefault(seq, (request.received_s, claude.answered_s[index]))
    return out


def service_env(
    redis_url: str,
    db_url: str,
    slack: FakeSlack,
    claude: FakeAnthropic,
    port: int,
    *,
    keep: int,
    oauth_key: str | None = None,
) -> dict[str, str]:
    """The service's environment: its Redis and database, the fakes' URLs, production's INFO JSON logs; with
    `oauth_key` (the token encryption key), multi-workspace mode instead of one bot token.

    PYTHONPATH is passed on, so another source tree can be run first on the path (an A/B of two versions)."""
    tokens = (
        {"SLACK_BOT_TOKEN": "xoxb-bench-overhead"}
        if oauth_key is None
        else {
            "SLACK_CLIENT_ID": CLIENT_ID,
            "SLACK_CLIENT_SECRET": "bench-overhead-client-secret",
            "TOKEN_ENCRYPTION_KEY": oauth_key,
            "PUBLIC_URL": "https://drafts.example.com",
        }
    )
    return {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")},
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": PREFIX,
        "DATABASE_URL": db_url,
        "SLACK_SIGNING_SECRET": SECRET,
        **tokens,
        "SLACK_API_URL": slack.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-bench-overhead",
        "ANTHROPIC_BASE_URL": claude.base_url,
        "AI_RATE_LIMIT_MAX": "100",
        "KEEP_COMPLETED": str(keep),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }


async def save_installation(
    engine: AsyncEngine, key: str, slack: FakeSlack, *, team: str, user: str, bot_token: str
) -> None:
    """The tables, then the workspace's installation as the OAuth flow saves it (encrypted with `key`): the bot's
    token and `user`'s own, one the fake Slack accepts."""
    await create_tables(engine, TokenCipher([key]))
    await installation_store(engine, CLIENT_ID, TokenCipher([key])).async_save(
        Installation(
            app_id="A0APP1",
            enterprise_id=None,
            team_id=team,
            user_id=user,
            bot_token=bot_token,
            bot_id="B0BOT1",
            bot_user_id=slack.bot_user_id,
            user_token=slack.ui.user_token(user),
        )
    )


async def install(db_url: str, key: str, slack: FakeSlack) -> None:
    """The benchmark's workspace installed in the database at `db_url`, for multi-workspace mode."""
    engine = create_engine(db_url)
    try:
        await save_installation(engine, key, slack, team=TEAM, user=USER, bot_token=slack.issue_token("xoxb"))
    finally:
        await engine.dispose()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (Linux /proc)."""
    # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th (clock ticks).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def database(url: str | None, tmp: str) -> AsyncIterator[str]:
    """The service's DATABASE_URL: a SQLite file in `tmp`, or a fresh PostgreSQL database on `url`'s server."""
    if url is None:
        yield f"sqlite+aiosqlite:///{tmp}/overhead.db"
        return
    base = make_url(url)
    name = f"bench_overhead_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def measure(
    rate: float,
    seconds: float,
    model_ms: int,
    log_path: Path,
    database_url: str | None = None,
    *,
    split: bool = False,
    oauth: bool = False,
) -> dict[str, Any]:
    """`split`: `serve` and `worker` in two processes (production's layout), not `run` in one; `oauth`: tokens
    from the installation store (multi-workspace mode), not one bot token in the settings."""
    count = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        async with database(database_url, tmp) as db_url:
            result = await _measure(rate, count, seconds, model_ms, log_path, tmp, db_url, split, oauth)
    return result


async def _measure(
    rate: float,
    count: int,
    seconds: float,
    model_ms: int,
    log_path: Path,
    tmp: str,
    db_url: str,
    split: bool,
    oauth: bool,
) -> dict[str, Any]:
    redis = BenchRedis(Path(tmp))
    redis.start()
    slack, claude = ClockedSlack(), ClockedAnthropic()
    await slack.start()
    await claude.start()
    claude.script(*[Behaviour(delay_s=model_ms / 1000) for _ in range(WARMUP + count + 10)])
    port = free_port()
    oauth_key = TokenCipher.new_key() if oauth else None
    if oauth_key is not None:
        await install(db_url, oauth_key, slack)
    env = service_env(redis.url, db_url, slack, claude, port, keep=count + 100, oauth_key=oauth_key)
    script = Path(sys.executable).with_name("slack-backend")
    with log_path.open("wb") as log:
        # The service's own processes, started once: the blocking call is a fork, not a wait.
        procs = [
            subprocess.Popen([str(script), command], env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
            for command in (("serve", "worker") if split else ("run",))
        ]
    try:
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, procs)
        # Unmeasured warm-up: the first requests open connections and load the lazy paths.
        warm = range(count + 1000, count + 1000 + WARMUP)
        await send_all(base_url, slack, rate=10, count=WARMUP, first=warm[0])
        await wait_delivered(slack, warm, timeout_s=60)
        wall_offset_s = time.time() - time.monotonic()
        cpu_before_s = sum(process_cpu_s(proc.pid) for proc in procs)
        sent = await send_all(base_url, slack, rate, count)
        await wait_delivered(slack, range(count), timeout_s=30 + model_ms / 1000 * count)
        cpu_s = sum(process_cpu_s(proc.pid) for proc in procs) - cpu_before_s
        jobs = await job_times(redis.url)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        await slack.close()
        await claude.close()
        redis.stop()
    model = model_times(claude)
    rows = []
    for item in sent:
        drafts = [t for t, draft in slack.post_times.get(f"r{item.seq}", []) if draft]
        if item.status != 200 or not drafts or item.seq not in jobs or item.seq not in model:
            rows.append({"seq": item.seq, "error": f"status {item.status}, draft {'yes' if drafts else 'no'}"})
            continue
        created_s = jobs[item.seq][0] / 1000 - wall_offset_s
        started_s = jobs[item.seq][1] / 1000 - wall_offset_s
        (model_s, answered_s), delivered_s = model[item.seq], drafts[0]
        segments = {
            "ingress to enqueued": created_s - item.send_s,
            "wait for a slot": started_s - created_s,
            "before the model": model_s - started_s,
            "delivery": delivered_s - answered_s,
        }
        rows.append(
            {
                "seq": item.seq,
                "ack_ms": (item.ack_s - item.send_s) * 1000,
                "model_ms": (answered_s - model_s) * 1000,
                "overhead_ms": (delivered_s - item.send_s - (answered_s - model_s)) * 1000,
                **{name: max(0.0, s) * 1000 for name, s in segments.items()},
            }
        )
    return {
        "rate": rate,
        "seconds": seconds,
        "model_ms": model_ms,
        "rows": rows,
        "load_1m": os.getloadavg()[0],
        "backend": make_url(db_url).get_backend_name(),
        "layout": "serve + worker (two processes)" if split else "run (one process)",
        "tokens": "OAuth (installation store)" if oauth else "one bot token",
        "service_cpu_ms_per_draft": cpu_s * 1000 / max(1, count),
    }


def summary(result: dict[str, Any]) -> str:
    good = [r for r in result["rows"] if "error" not in r]
    errors = len(result["rows"]) - len(good)
    lines = [
        f"{len(good)} drafts ({errors} errors) at {result['rate']:g} requests/s for {result['seconds']:g} s, "
        f"model delay {result['model_ms']} ms (its own time, as the fake saw it, is subtracted); "
        f"load average {result['load_1m']:.2f}",
        f"{result['layout']}; database {result['backend']}; tokens: {result['tokens']}; "
        f"service CPU (user + sys) {result['service_cpu_ms_per_draft']:.2f} ms a draft",
        "",
        "| figure | p50 ms | p99 ms | max ms | mean ms |",
        "|---|---|---|---|---|",
    ]
    for name in ("overhead_ms", "ack_ms", *SEGMENTS, "model_ms"):
        values = [r[name] for r in good]
        if not values:
            continue
        label = {
            "overhead_ms": "**overhead** (send to draft, minus the model)",
            "ack_ms": "ack (HTTP response)",
            "model_ms": "(the model's own time, subtracted)",
        }
        lines.append(
            f"| {label.get(name, name)} | {percentile(values, 50):.1f} | {percentile(values, 99):.1f} | "
            f"{max(values):.1f} | {statistics.fmean(values):.1f} |"
        )
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    """Each request's overhead as stacked segments (sorted by overhead), and the mean of each segment."""
    # Imported by name: matplotlib is the optional `bench` extra, so neither the run nor mypy may need it installed.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    good = sorted((r for r in result["rows"] if "error" not in r), key=lambda r: r["overhead_ms"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [4, 1]})
    x = range(len(good))
    bottom = [0.0] * len(good)
    for name in SEGMENTS:
        values = [r[name] for r in good]
        left.bar(x, values, bottom=bottom, width=1.0, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.set_xlabel("requests, sorted by overhead")
    left.set_ylabel("ms (the model's own time left out)")
    left.set_title(f"Our overhead on a draft at {result['rate']:g} requests/s")
    left.legend(loc="upper left")
    base = 0.0
    for name in SEGMENTS:
        mean = statistics.fmean(r[name] for r in good) if good else 0.0
        right.bar([0], [mean], bottom=[base], width=0.6)
        base += mean
    right.set_xticks([0], ["mean"])
    right.set_title("mean per segment")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send (default 60)")
    parser.add_argument("--model-ms", type=int, default=200, help="the fake model's fixed delay (default 200)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where overhead.md and overhead.png go")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server's URL (postgresql+asyncpg://...): run on a fresh database made there and dropped "
        "after; default: a SQLite file in a temp directory",
    )
    parser.add_argument(
        "--split", action="store_true", help="`serve` and `worker` as two processes (production), not `run` in one"
    )
    parser.add_argument(
        "--oauth", action="store_true", help="multi-workspace mode: tokens from the installation store, encrypted"
    )
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    log_path = args.results / "overhead-service.log"
    result = asyncio.run(
        measure(args.rate, args.seconds, args.model_ms, log_path, args.database_url, split=args.split, oauth=args.oauth)
    )
    text = summary(result)
    print(text)
    (args.results / "overhead.md").write_text(f"# Our overhead on a draft\n\n{text}\n")
    try:
        chart(result, args.results / "overhead.png")
    except ImportError:
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
