"""The Starlette app: Slack's endpoint, the OAuth routes, health probes, metrics, the admin dashboard, and the
lifespan that owns Redis and the database engine."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import (
    AsyncSlackRequestHandler,
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_bolt.request.async_internals import build_async_context
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slack_backend.config import Secret, Settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.logging import get_logger
from slack_backend.queue import Queue, ServerSafety, create_redis, server_safety
from slack_backend.queue.connection import RedisClient
from slack_backend.slack.outbound import outbound_session
from slack_backend.slack.response_urls import is_loopback_url, response_url_problem
from slack_backend.slack.tokens import require_token_cipher
from slack_backend.store import create_engine, create_tables
from slack_backend.store import installation_store as store_installations
from slack_backend.store import oauth_state_store as store_oauth_states
from slack_backend.store import ping as ping_database
from slack_backend.web.admin import AdminDashboard
from slack_backend.web.ingress import INSTALL_PATH, REDIRECT_URI_PATH, build_bolt_app, resolve_signing_secret
from slack_backend.web.metrics import Metrics, metrics_routes
from slack_backend.web.slack_connect import CONNECT_PATH, slack_connect
from slack_backend.web.slack_guard import Refusal, read_slack_request

log = get_logger(__name__)

SLACK_EVENTS_PATH = "/slack/events"
# Slack's payloads are a few kB; a megabyte is far past any real one and cheap to hold.
MAX_SLACK_BODY_BYTES = 1024 * 1024
# A probe must answer before the orchestrator's own timeout, even when Redis does not answer at all.
READY_TIMEOUT_S = 2.0
# Workers renew leases (and beat) every third of JOB_LEASE_MS; three missed renewals mean no worker is alive.
HEARTBEAT_MISSED_RENEWALS = 3
REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed only when it is short and plain, so it cannot forge log lines or fill them.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OAUTH_DISABLED_TEXT = (
    "Slack OAuth is not enabled: this app runs for one workspace with SLACK_BOT_TOKEN. "
    "Set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install it in several workspaces."
)


@dataclass(frozen=True)
class WebState:
    """What the lifespan builds and the routes use; `signing_secret` is the one Bolt verifies with.

    `expect_workers`: /readyz also needs a recent worker heartbeat (the app runs with workers).
    """

    settings: Settings
    redis: RedisClient
    queue: Queue
    bolt: AsyncApp
    slack_handler: AsyncSlackRequestHandler
    signing_secret: str
    engine: AsyncEngine
    metrics: Metrics
    expect_workers: bool = False


async def _migrate_if_reachable(engine: AsyncEngine) -> None:
    """Single-workspace mode: bring the schema up for App Home and watches, but start without a database (commands,
    shortcuts and mentions need none; /readyz reports it, and the users' settings wait for it)."""
    try:
        await create_tables(engine)
    except Exception as exc:  # an unreachable database is /readyz's to report, not a reason to refuse to start
        log.warning("database not migrated at start: App Home and watches wait for it", error=type(exc).__name__)


def web_state(app: Starlette) -> WebState:
    """The running app's state; only available inside its lifespan."""
    state = getattr(app.state, "web", None)
    if not isinstance(state, WebState):
        raise RuntimeError("the web app is not started: run it inside its lifespan")
    return state


def create_app(
    settings: Settings,
    *,
    redis: RedisClient | None = None,
    slack_client: AsyncWebClient | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    installation_store: AsyncInstallationStore | None = None,
    oauth_state_store: AsyncOAuthStateStore | None = None,
    metrics: Metrics | None = None,
    expect_workers: bool = False,
) -> Starlette:
    """Build the web app. Its lifespan opens Redis (unless `redis` is given, which the caller then closes),
    opens the database engine (for /readyz) and the outbound HTTP session every click shares (slack/outbound.py),
    builds the queue and the Bolt app, and keeps them in `app.state.web`
    (a `WebState`); `app.state.redis`, `.queue`, `.bolt`, `.signing_secret` and `.metrics` name the same objects.
    /metrics and the /admin dashboard are always mounted (the dashboard answers 503 without ADMIN_TOKEN).

    Args:
        settings: the service settings.
        redis: a client to use instead of one made from the settings.
        slack_client: the Slack Web API client Bolt uses (default: one made from the settings).
        extra_routes: more routes, mounted after the built-in ones.
        installation_store: OAuth mode only: where installations are kept.
        oauth_state_store: OAuth mode only: where install states are kept.
        metrics: the metrics /metrics serves (default: new ones); pass the ones your workers are instrumented with.
        expect_workers: /readyz also requires a worker heartbeat newer than three lease renewals (`run`: True;
            `serve`, whose workers run elsewhere and may scale to zero: False).
    """
    app_metrics = metrics if metrics is not None else Metrics(live_worker_age_ms=settings.job_lease_ms)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The engine first: an unusable DATABASE_URL fails here, before anything needs closing.
        engine = create_engine(settings.database_url)
        client = create_redis(settings.redis_target()) if redis is None else redis
        queue: Queue | None = None
        closing = AsyncExitStack()
        try:
            slack_session = await closing.enter_async_context(outbound_session())
            queue = ai_responses_queue(client, settings)
            app_metrics.watch(queue)
            secret = resolve_signing_secret(settings)
            installations, states = installation_store, oauth_state_store
            oauth = settings.slack_client_id is not None
            if oauth:
                # OAuth mode: the config requires TOKEN_ENCRYPTION_KEY, so a cipher is always there.
                await create_tables(engine, require_token_cipher(settings))
            else:
                await _migrate_if_reachable(engine)
            if settings.slack_client_id is not None and installations is None:
                # The workers read bot tokens from this same database, so installs must land here too.
                installations = store_installations(engine, settings.slack_client_id, require_token_cipher(settings))
                states = states or store_oauth_states(engine)
            bolt = build_bolt_app(
                settings,
                queue,
                client=slack_client,
                installation_store=installations,
                oauth_state_store=states,
                signing_secret=secret,
                engine=engine,
                slack_session=slack_session,
            )
            handler = AsyncSlackRequestHandler(bolt)
            state = WebState(settings, client, queue, bolt, handler, secret, engine, app_metrics, expect_workers)
            app.state.web = state
            app.state.redis = client
            app.state.queue = queue
            app.state.bolt = bolt
            app.state.signing_secret = secret
            yield
        finally:
            if queue is not None:
                app_metrics.unwatch(queue)
            await closing.aclose()
            await engine.dispose()
            if redis is None:
                await client.aclose()

    routes: list[BaseRoute] = [
        Route(SLACK_EVENTS_PATH, slack_events, methods=["POST"]),
        Route(INSTALL_PATH, slack_oauth, methods=["GET"]),
        Route(REDIRECT_URI_PATH, slack_oauth, methods=["GET"]),
        Route(CONNECT_PATH, slack_connect, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        # Public listener: /metrics answers only METRICS_TOKEN's bearer (worker processes serve theirs on loopback).
        *metrics_routes(public=True, token=_secret(settings.metrics_token)),
        *AdminDashboard(settings).routes(),
        *extra_routes,
    ]
    app = Starlette(routes=routes, middleware=[Middleware(RequestIdMiddleware)], lifespan=lifespan)
    # Set now, not in the lifespan: the metrics exist (and workers may be instrumented) before the app starts.
    app.state.metrics = app_metrics
    return app


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
    parsed = read_slack_request(body, request.headers, state.signing_secret)
    if isinstance(parsed, Refusal):
        return PlainTextResponse(parsed.reason, status_code=parsed.status)
    url_problem = _response_url_problem(parsed, state.settings)
    if url_problem is not None:
        # Refused before any listener runs, so nothing (not even a "try again" note) is ever posted to it.
        log.warning("slack request refused", reason=url_problem)
        return PlainTextResponse(url_problem, status_code=400)
    try:
        bolt_request = bolt_request_for(request, body, parsed)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        # Signed but not shaped like anything Slack sends: Bolt cannot read its ids, so no listener could run.
        log.warning("malformed slack request", error=f"{type(exc).__name__}: {exc}")
        return PlainTextResponse("malformed Slack request body", status_code=400)
    return to_starlette_response(await state.bolt.async_dispatch(bolt_request))


def _secret(value: Secret | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _response_url_problem(parsed: dict[str, Any], settings: Settings) -> str | None:
    """Why the request's response_url may not be used (off Slack's hook hosts), or None (fine, or none given)."""
    url = parsed.get("response_url")
    if url is None:
        return None
    if not isinstance(url, str):
        return "response_url must be a string"
    return response_url_problem(url, allow_loopback=is_loopback_url(settings.slack_api_url))


def bolt_request_for(request: Request, body: bytes, parsed: dict[str, Any]) -> AsyncBoltRequest:
    """Bolt's request for a verified body, carrying our parse of it (Bolt keeps the raw text to verify it again).

    Bolt's parser would read a form that merely contains "payload" as empty; the context is rebuilt from our body.
    """
    bolt_request = to_async_bolt_request(request, body, {"request_id": request.state.request_id})
    bolt_request.body = parsed
    context = AsyncBoltContext({"request_id": request.state.request_id})
    bolt_request.context = build_async_context(context, parsed)
    return bolt_request


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
    """Readiness: 200 while Redis answers PING, the database answers, and (when workers are expected) a worker
    heartbeat is recent; else 503 with the first reason."""
    state = web_state(request.app)
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await state.redis.ping()
    except TimeoutError:
        return _unavailable(f"redis: no answer within {READY_TIMEOUT_S:g} s")
    except (RedisError, OSError) as exc:
        return _unavailable(_redis_reason(exc))
    if not await ping_database(state.engine, timeout_s=READY_TIMEOUT_S):
        return _unavailable(f"database: no answer to SELECT 1 within {READY_TIMEOUT_S:g} s")
    if state.expect_workers:
        reason = await _workers_missing(state)
        if reason is not None:
            return _unavailable(reason)
    return JSONResponse({"status": "ok", "redis": await _redis_detail(state)})


async def _redis_detail(state: WebState) -> dict[str, object]:
    """How the Redis server evicts and persists (each `unknown` where CONFIG GET is refused), and its warnings."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            safety = await server_safety(state.redis)
    except TimeoutError:
        safety = ServerSafety(maxmemory_policy=None, aof=None, rdb_saves=None)
    return {**safety.describe(), "warnings": safety.problems}


async def _workers_missing(state: WebState) -> str | None:
    """Why no worker counts as alive, or None when one beat recently enough."""
    max_age_ms = HEARTBEAT_MISSED_RENEWALS * state.settings.job_lease_ms // 3
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            beats = await state.queue.workers()
    except TimeoutError:
        return f"redis: no answer within {READY_TIMEOUT_S:g} s"
    except (RedisError, OSError) as exc:
        return _redis_reason(exc)
    now_ms = int(time.time() * 1000)
    ages = [now_ms - int(beat.get("last_seen_ms", 0)) for beat in beats.values()]
    if any(age <= max_age_ms for age in ages):
        return None
    if not ages:
        return "workers: no worker heartbeat"
    return f"workers: newest heartbeat {min(ages) / 1000:.1f} s old (limit {max_age_ms / 1000:g} s)"


def _redis_reason(exc: BaseException) -> str:
    """The public reason for a Redis error; its text (host, port) goes to the log only."""
    log.warning("redis unavailable", error=f"{type(exc).__name__}: {exc}")
    return f"redis: unavailable ({type(exc).__name__})"


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
