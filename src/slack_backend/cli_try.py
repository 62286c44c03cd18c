"""`slack-backend try "text"`: send a signed, Slack-shaped slash command through the real ingress and print the reply.

It runs the web app on a loopback port and a worker in this process, and listens on another loopback port as the
request's response_url, so a newcomer sees the whole path work with no Slack app and no credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

if TYPE_CHECKING:
    # The web stack loads when `try` runs, not at every start of the command line.
    import httpx

    from slack_backend.config import Settings

TRY_TEAM, TRY_USER, TRY_CHANNEL = "TTRY00001", "UTRY00001", "CTRY00001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def try_request(settings: Settings, text: str, *, timeout_s: float) -> list[dict[str, Any]]:
    """Run the round trip; return the ack, then the messages posted to the response_url (the draft last)."""
    import httpx
    import uvicorn
    from aiohttp import web

    from slack_backend.jobs.workers import build_ai_worker
    from slack_backend.queue import create_redis
    from slack_backend.slack.signing import sign_request
    from slack_backend.web.app import create_app, web_state

    class _QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    posts: list[dict[str, Any]] = []
    got_draft = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        posts.append(body)
        if "blocks" in body:
            got_draft.set()
        return web.json_response({"ok": True})

    receiver = web.Application()
    receiver.router.add_post("/response", receive)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    receiver_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    # A loopback Slack: the loopback response_url below is then allowed, and no token ever leaves the machine.
    settings = dataclasses.replace(settings, slack_api_url=f"http://127.0.0.1:{receiver_port}/api/")

    redis = create_redis(settings.redis_target())
    app = create_app(settings, redis=redis)
    web_port = _free_port()
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=web_port, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    cleanup = contextlib.AsyncExitStack()
    worker = await build_ai_worker(settings, redis, cleanup, concurrency=1)
    working = asyncio.create_task(worker.run())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
            await asyncio.sleep(0.02)
        form = {
            "token": "unused",
            "team_id": TRY_TEAM,
            "team_domain": "try",
            "channel_id": TRY_CHANNEL,
            "channel_name": "try",
            "user_id": TRY_USER,
            "user_name": "you",
            "command": settings.slack_slash_command,
            "text": text,
            "response_url": f"http://127.0.0.1:{receiver_port}/response",
            "trigger_id": f"try.{uuid.uuid4().hex}",
            "api_app_id": "ATRY00001",
        }
        body = urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers.update(sign_request(web_state(app).signing_secret, body))
        async with httpx.AsyncClient(timeout=10) as http:
            started = time.monotonic()
            ack = await http.post(f"http://127.0.0.1:{web_port}/slack/events", content=body, headers=headers)
            ack_ms = (time.monotonic() - started) * 1000
        posts.insert(0, {"ack_status": ack.status_code, "ack_ms": round(ack_ms, 1), "ack": _json_or_text(ack)})
        if ack.status_code == 200:
            await asyncio.wait_for(got_draft.wait(), timeout_s)
        return posts
    finally:
        await worker.close(5)
        await working
        server.should_exit = True
        await serving
        await cleanup.aclose()
        await redis.aclose()
        await runner.cleanup()


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _draft_text(post: dict[str, Any]) -> str:
    parts = []
    for block in post.get("blocks", []):
        text = block.get("text")
        if isinstance(text, dict):
            parts.append(str(text.get("text", "")))
        for element in block.get("elements", []) or []:
            if isinstance(element, dict) and "text" in element:
                parts.append(str(element["text"]))
    return "\n".join(parts) or str(post.get("text", ""))


def register(app: click.Group, settings_or_exit: Callable[[], Settings]) -> None:
    """Add the `try` command to the root app."""

    @app.command("try")
    @click.argument("text", metavar="text", help="The message to draft a reply to.")
    @click.option("--timeout", "timeout_s", type=float, default=60.0, help="Seconds to wait for the draft.")
    @click.option("--json", "as_json", is_flag=True, help="Print what Slack would receive, as JSON.")
    def try_command(text: str, timeout_s: float, as_json: bool) -> None:
        """Send a signed slash command through the real ingress and print the ephemeral reply the user gets."""
        from slack_backend.logging import configure_logging

        settings = settings_or_exit()
        configure_logging("WARNING", settings.log_format)
        try:
            posts = asyncio.run(try_request(settings, text, timeout_s=timeout_s))
        except TimeoutError:
            click.echo(f"no draft arrived within {timeout_s:g} s; is Redis reachable and a worker free?", err=True)
            raise click.exceptions.Exit(1) from None
        except OSError as exc:
            click.echo(f"could not run the round trip: {exc}", err=True)
            raise click.exceptions.Exit(1) from None
        if as_json:
            click.echo(json.dumps(posts, indent=2))
            return
        ack = posts[0]
        click.echo(f"ack: HTTP {ack['ack_status']} in {ack['ack_ms']} ms: {ack['ack']}")
        if ack["ack_status"] != 200:
            raise click.exceptions.Exit(1)
        for post in posts[1:]:
            if "blocks" in post:
                click.echo("delivered ephemeral message:\n" + _draft_text(post))
            else:
                click.echo(f"progress: {post.get('text', '')}")
