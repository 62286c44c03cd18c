"""The Starlette app: Slack's endpoint, the OAuth routes, health probes, and the lifespan that owns Redis."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import (
    AsyncSlackRequestHandler,
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slack_backend.config import Settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.logging import get_logger
from slack_backend.queue import Queue, create_redis
from slack_backend.slack.ingress import INSTALL_PATH, REDIRECT_URI_PATH, build_bolt_app, resolve_signing_secret

log = get_logger(__name__)

SLACK_EVENTS_PATH = "/slack/events"
# Slack's payloads are a few kB; a megabyte is far past any real one and cheap to hold.
MAX_SLACK_BODY_BYTES = 1024 * 1024
# A probe must answer before the orchestrator's own timeout, even when Redis does not answer at all.
READY_TIMEOUT_S = 2.0
REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed only when it is short and plain, so it cannot forge log lines or fill them.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OAUTH_DISABLED_TEXT = (
    "Slack OAuth is not enabled: this app runs for one workspace with SLACK_BOT_TOKEN. "
    "Set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install it in several workspaces."
)


@dataclass(frozen=True)
class WebState:
    """What the lifespan builds and the routes use; `signing_secret` is the one Bolt verifies with."""

    settings: Settings
    redis: Redis
    queue: Queue
    bolt: AsyncApp
    slack_handler: AsyncSlackRequestHandler
    signing_secret: str


def web_state(app: Starlette) -> WebState:
    """The running app's state; only available inside its lifespan."""
    state = getattr(app.state, "web", None)
    if not isinstance(state, WebState):
        raise RuntimeError("the web app is not started: run it inside its lifespan")
    return state


def create_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    slack_client: AsyncWebClient | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    installation_store: AsyncInstallationStore | None = None,
    oauth_state_store: AsyncOAuthStateStore | None = None,
) -> Starlette:
    """Build the web app. Its lifespan opens Redis (unless `redis` is given, which the caller then closes),
    builds the queue and the Bolt app, and keeps them in `app.state.web` (a `WebState`); `app.state.redis`,
    `.queue`, `.bolt` and `.signing_secret` name the same objects.

    Args:
        settings: the service settings.
        redis: a client to use instead of one made from the settings.
        slack_client: the Slack Web API client Bolt uses (default: one made from the settings).
        extra_routes: more routes (admin, metrics), mounted after the built-in ones.
        installation_store: OAuth mode only: where installations are kept.
        oauth_state_store: OAuth mode only: where install states are kept.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = create_redis(settings.redis_url_value()) if redis is None else redis
        try:
            queue = ai_responses_queue(client, settings)
            secret = resolve_signing_secret(settings)
            bolt = build_bolt_app(
                settings,
                queue,
                client=slack_client,
                installation_store=installation_store,
                oauth_state_store=oauth_state_store,
                signing_secret=secret,
            )
            state = WebState(settings, client, queue, bolt, AsyncSlackRequestHandler(bolt), secret)
            app.state.web = state
            app.state.redis = client
            app.state.queue = queue
            app.state.bolt = bolt
            app.state.signing_secret = secret
            yield
        finally:
            if redis is None:
                await client.aclose()

    routes: list[BaseRoute] = [
        Route(SLACK_EVENTS_PATH, slack_events, methods=["POST"]),
        Route(INSTALL_PATH, slack_oauth, methods=["GET"]),
        Route(REDIRECT_URI_PATH, slack_oauth, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestIdMiddleware)], lifespan=lifespan)


async def slack_events(request: Request) -> Response:
    """Events, shortcuts and slash commands: Bolt verifies the signature, runs the listener, and answers."""
    state = web_state(request.app)
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            return PlainTextResponse("invalid Content-Length", status_code=400)
        if int(length) > MAX_SLACK_BODY_BYTES:
            return _too_large()
    # Counted while read as well: a chunked body has no Content-Length to check.
    chunks: list[bytes] = []
    size_bytes = 0
    try:
        async for chunk in request.stream():
            size_bytes += len(chunk)
            if size_bytes > MAX_SLACK_BODY_BYTES:
                return _too_large()
            chunks.append(chunk)
    except ClientDisconnect:
        return PlainTextResponse("client disconnected", status_code=400)
    body = b"".join(chunks)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return PlainTextResponse("body is not UTF-8", status_code=400)
    bolt_request = to_async_bolt_request(request, body, {"request_id": request.state.request_id})
    return to_starlette_response(await state.bolt.async_dispatch(bolt_request))


async def slack_oauth(request: Request) -> Response:
    """The install link and OAuth redirect, served by Bolt's OAuth flow when multi-workspace mode is on."""
    state = web_state(request.app)
    if state.bolt.oauth_flow is None:
        return PlainTextResponse(OAUTH_DISABLED_TEXT, status_code=404)
    return await state.slack_handler.handle(request)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers HTTP."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: 200 while Redis answers PING, else 503 with the reason."""
    state = web_state(request.app)
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await state.redis.ping()
    except TimeoutError:
        return _unavailable(f"redis: no answer within {READY_TIMEOUT_S:g} s")
    except (RedisError, OSError) as exc:
        return _unavailable(f"redis: {type(exc).__name__}: {exc}")
    return JSONResponse({"status": "ok"})


def _unavailable(reason: str) -> Response:
    log.warning("not ready", reason=reason)
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)


def _too_large() -> Response:
    log.warning("slack request refused: body too large", limit_bytes=MAX_SLACK_BODY_BYTES)
    return PlainTextResponse(f"request body over {MAX_SLACK_BODY_BYTES} bytes", status_code=413)


class RequestIdMiddleware:
    """Give each HTTP request an id (the caller's X-Request-ID when plain, else a new one): bound into the
    structlog context for its logs, kept in `request.state.request_id`, and echoed in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = given if given is not None and _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)
