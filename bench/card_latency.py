"""Click-to-updated-card latency of Refine, Regenerate and Send as me: the real web app and worker, fake Slack and
Claude.

Run from the repository root with a redis-server on 127.0.0.1:6379: `python -m bench.card_latency [--clicks 90]`
(`--database-url postgresql+asyncpg://.../empty_db` to run against an empty PostgreSQL database, as production
runs; a new SQLite file by default). Each click's time runs from the signed request going in (its first byte on
the socket) to the fake Slack's receipt of the card's replacement at the click's response_url, minus the model's
own time as the fake model saw it (from its receipt of the request to its answer ready: the fixed delay and however
late its timer woke). Send as me calls no model: nothing is subtracted; the draft is set back to unsent between its
clicks. One click of each kind goes
first, unmeasured: the first click of a kind loads lazy imports, opens connections and compiles its SQL, which a
running service did long before.

By default the web app (through httpx's ASGI transport) and one worker run in this process, beside the fakes.
`--service-process` runs the service as users start it instead (`slack-backend run`: uvicorn, the web app and a
worker in their own process, INFO JSON logs), so neither the fakes nor this client share its loop and its CPU per
click is its own. Prints p50/p99/max, where the time went (the ack; for Refine and Regenerate request in -> job
enqueued -> a worker started it -> the model's request, and the model's answer -> card) and CPU per click (this
process's, or the service's: the figure load moves least); not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from structlog.testing import capture_logs
from tests.fakes.anthropic_server import Behaviour
from tests.fakes.slack_server import FakeSlack
from tests.support.card_requests import click, refine_values, submit
from tests.support.engine import running, wait_until
from tests.support.slack_requests import BOT_TOKEN, SECRET, TEAM, USER, post_signed, shortcut_body

from bench._server import free_port
from bench.overhead import CLIENT_ID, ClockedAnthropic, on_wire, save_installation, wait_ready
from slack_backend.config import Settings, load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.queue import JobState, create_redis
from slack_backend.queue.connection import RedisClient
from slack_backend.slack import card
from slack_backend.store import TokenCipher, create_engine
from slack_backend.store.suggestions import suggestions_table
from slack_backend.web import create_app

API_KEY = "sk-ant-bench-0123456789"
KEY = TokenCipher.new_key()
MODEL_DELAY_S = 0.2
COMPLETED = JobState.COMPLETED


REFINE = "refine (modal submit -> card)"
REGENERATE = "regenerate (click -> card)"
SEND = "send as me (click -> 'Sent' card)"
KINDS = (REFINE, REGENERATE, SEND)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Figures:
    """Per kind of click, in seconds: the overhead, the ack, the segments around the model, the process's CPU."""

    overhead: list[float] = field(default_factory=list)
    ack: list[float] = field(default_factory=list)
    to_model: list[float] = field(default_factory=list)
    to_queued: list[float] = field(default_factory=list)
    queue_hop: list[float] = field(default_factory=list)
    before_model: list[float] = field(default_factory=list)
    after_model: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


async def main(clicks: int, redis_url: str, database_url: str | None, *, service_process: bool) -> None:
    async with (
        FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM) as slack,
        ClockedAnthropic(api_key=API_KEY) as claude,
    ):
        tmp = Path(tempfile.mkdtemp(prefix="card-bench-"))
        env = {
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": f"bench-card-{secrets.token_hex(4)}",
            "DATABASE_URL": database_url or f"sqlite+aiosqlite:///{tmp / 'db.sqlite'}",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_CLIENT_ID": CLIENT_ID,
            "SLACK_CLIENT_SECRET": "bench-secret",
            "TOKEN_ENCRYPTION_KEY": KEY,
            "PUBLIC_URL": "https://drafts.example.com",
            "SLACK_API_URL": slack.base_url,
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_BASE_URL": claude.base_url,
            "AI_RATE_LIMIT_MAX": "50",
        }
        settings = load_settings(env)
        redis = create_redis(settings.redis_url_value())
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(redis.aclose)
            engine = create_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            await save_installation(engine, KEY, slack, team=TEAM, user=USER, bot_token=BOT_TOKEN)
            queue = ai_responses_queue(redis, settings)
            if service_process:
                client, cpu_s = await _service_process(stack, env, tmp)
            else:
                client, cpu_s = await _in_process(stack, settings, redis)
            claude.script(*[Behaviour(delay_s=MODEL_DELAY_S) for _ in range(clicks + len(KINDS) + 1)])
            print(f"fake model delay {MODEL_DELAY_S * 1000:.0f} ms; its own time is subtracted from refine, regenerate")
            await post_signed(client, shortcut_body(slack))

            async def carded() -> bool:
                return bool(slack.response_posts.get("shortcut1"))

            await wait_until(carded, timeout_s=30)
            [post] = slack.response_posts["shortcut1"]
            [actions] = [b for b in post["blocks"] if b["type"] == "actions"]
            suggestion_id = actions["elements"][0]["value"]
            figures = {kind: Figures() for kind in KINDS}
            # (kind, request sent, the model's request arrived, response_url) of each measured Refine and Regenerate.
            hops: list[tuple[str, float, float, str]] = []
            wall_offset_s = time.time() - time.monotonic()
            for i in range(-len(KINDS), clicks):
                kind = KINDS[i % len(KINDS)]
                # The draft back to unsent, so every click finds it usable (a sent draft refuses Refine).
                async with engine.begin() as conn:
                    await conn.execute(suggestions_table.update().values(sent_at=None, sent_ts=None))
                if kind == SEND:
                    the_click = click(slack, card.SEND, suggestion_id)
                    body = the_click.body
                elif kind == REFINE:
                    the_click = click(slack, card.REFINE, suggestion_id)
                    await post_signed(client, the_click.body)
                    body = submit(slack, slack.ui.opened[-1], refine_values(preset="shorter"))
                else:
                    the_click = click(slack, card.REGENERATE, suggestion_id)
                    body = the_click.body
                delay_s = 0.0 if kind == SEND else MODEL_DELAY_S
                models_before = len(claude.requests)
                cpu_before_s = cpu_s()
                # Over HTTP the click counts as sent when its first byte goes (on_wire); through the in-process
                # ASGI transport there is no socket, and the call's start stands.
                sent = [time.monotonic()]
                await post_signed(client, body, extensions=on_wire(functools.partial(sent.__setitem__, 0)))
                acked = time.monotonic()
                sent_s = sent[0]

                async def changed(response_id: str = the_click.response_id) -> bool:
                    return bool(slack.ui.card_changed_s.get(response_id))

                await wait_until(changed, timeout_s=30, every_s=0.005)
                done = slack.ui.card_changed_s[the_click.response_id][0]
                if i < 0:
                    continue  # warm-up
                row = figures[kind]
                row.cpu.append(cpu_s() - cpu_before_s)
                if not delay_s:
                    row.overhead.append(done - sent_s)
                else:
                    # Minus the model's own time: its fixed delay and however late the fake's timer woke.
                    [model] = claude.requests[models_before:]
                    answered_s = claude.answered_s[models_before]
                    row.overhead.append(done - sent_s - (answered_s - model.received_s))
                    row.to_model.append(model.received_s - sent_s)
                    row.after_model.append(done - answered_s)
                    hops.append((kind, sent_s, model.received_s, the_click.response_url))
                row.ack.append(acked - sent_s)
            # Where the job's time went, from its record: created (enqueued) and processed (a worker started it).
            jobs = {str(job.data.get("response_url")): job for job in await queue.get_jobs(COMPLETED)}
            for kind, sent_s, model_s, url in hops:
                job = jobs[url]
                created_s = job.created_ms / 1000 - wall_offset_s
                started_s = (job.processed_ms or 0) / 1000 - wall_offset_s
                figures[kind].to_queued.append(created_s - sent_s)
                figures[kind].queue_hop.append(started_s - created_s)
                figures[kind].before_model.append(model_s - started_s)
        print(f"load average {os.getloadavg()[0]:.1f}; {len(KINDS)} warm-up clicks left out")
        cpu_of = "the service process" if service_process else "this process: service, fakes and client"
        for name, row in figures.items():
            print(f"{name}: n={len(row.overhead)} {_stats(row.overhead)}")
            print(f"    ack {_stats(row.ack)}; CPU per click ({cpu_of}) mean {_ms(statistics.mean(row.cpu))}")
            if row.to_model:
                print(f"    request in -> model's request {_stats(row.to_model)}")
                print(f"      request in -> job enqueued {_stats(row.to_queued)}")
                print(f"      enqueued -> a worker started it {_stats(row.queue_hop)}")
                print(f"      started -> model's request {_stats(row.before_model)}")
                print(f"    model's answer -> card {_stats(row.after_model)}")


async def _in_process(
    stack: contextlib.AsyncExitStack, settings: Settings, redis: RedisClient
) -> tuple[httpx.AsyncClient, Callable[[], float]]:
    """The web app (through httpx's ASGI transport) and one worker in this process and loop, beside the fakes."""
    app = create_app(settings, redis=redis)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    )
    worker = await build_ai_worker(settings, redis, stack)
    await stack.enter_async_context(running(worker))
    return client, time.process_time


async def _service_process(
    stack: contextlib.AsyncExitStack, env: dict[str, str], tmp: Path
) -> tuple[httpx.AsyncClient, Callable[[], float]]:
    """`slack-backend run` (web app over HTTP and a worker, one process, INFO JSON logs), as users start it."""
    port = free_port()
    service_env = {
        **{key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "PYTHONPATH")},
        **env,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }
    script = Path(sys.executable).with_name("slack-backend")
    with (tmp / "service.log").open("wb") as log:
        # Started once: the blocking call is a fork, not a wait.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [str(script), "run"], env=service_env, stdout=log, stderr=subprocess.STDOUT
        )

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=30)

    stack.callback(stop)
    base_url = f"http://127.0.0.1:{port}"
    await wait_ready(base_url, [proc])
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=10))
    ticks_s = os.sysconf("SC_CLK_TCK")

    def service_cpu_s() -> float:
        # utime and stime of the service (fields 14 and 15 of /proc/<pid>/stat), in clock ticks.
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks_s

    return client, service_cpu_s


def _stats(values: list[float]) -> str:
    return (
        f"p50={_ms(percentile(values, 0.5))} p99={_ms(percentile(values, 0.99))} max={_ms(max(values))} "
        f"mean={_ms(statistics.mean(values))}"
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=60)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument(
        "--service-process",
        action="store_true",
        help="run the service as `slack-backend run` in its own process (over HTTP), not in this one",
    )
    args = parser.parse_args()
    with capture_logs():  # the figures only, not the app's log lines
        asyncio.run(main(args.clicks, args.redis_url, args.database_url, service_process=args.service_process))
