"""The /admin dashboard: queue state, charts, workers and failed jobs, with retry/remove/pause behind ADMIN_TOKEN.

Access: without ADMIN_TOKEN every page answers 503. A browser logs in at /admin/login (the token in a POSTed form)
and gets a session cookie holding an HMAC, never the token; scripts may send `Authorization: Bearer <token>`. A
token in a query string is refused. Every action is a POST that needs the session's CSRF token and, when the browser
says where it comes from (Sec-Fetch-Site, Origin, Referer), our own site. Pages show ids, groups, states, timings
and failure reasons only: never job data, results or progress, which hold users' message text.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from slack_backend.config import Settings
from slack_backend.logging import get_logger
from slack_backend.queue import Job, JobNotFoundError, JobState, JobStateError, Queue
from slack_backend.store import AuditLog, QuotaStore
from slack_backend.web._admin_auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    AdminAuth,
    AdminSession,
    LoginThrottle,
    cross_site_reason,
)
from slack_backend.web._dashboard_data import UsageLookup, read_overview

log = get_logger(__name__)

ADMIN_PATH = "/admin"
FAILED_PAGE_SIZE = 20
# Our forms are a few fields; anything bigger is not one of them.
MAX_FORM_BYTES = 16 * 1024
DISABLED_TEXT = "dashboard disabled: set ADMIN_TOKEN"
QUERY_TOKEN_TEXT = (
    "Tokens in URLs are refused: they end up in logs and browser history. Log in with the form, or send an "
    "Authorization: Bearer header."
)
_NOTICES = {
    "retried": "Job {job} was sent back to waiting with its attempts reset.",
    "removed": "Job {job} was removed.",
    "paused": "The queue is paused: no worker starts a job until it is resumed.",
    "resumed": "The queue is resumed.",
    "not_found": "Job {job} is no longer kept.",
    "wrong_state": "Job {job} is not in a state that allows this (running jobs cannot be retried or removed).",
}


class AdminDashboard:
    """The dashboard's routes and templates for one app; the queue comes from the running app's state."""

    def __init__(self, settings: Settings) -> None:
        token = settings.admin_token
        self._auth = AdminAuth(token.get_secret_value()) if token is not None else None
        self._throttle = LoginThrottle()
        # Workers beat every third of their lease: a beat older than three renewals (one lease) means trouble.
        self._stale_after_ms = settings.job_lease_ms
        self._default_quota = settings.workspace_daily_token_quota
        self._env = Environment(
            loader=PackageLoader("slack_backend.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["utc"] = _utc
        self._env.filters["duration"] = _duration

    def routes(self) -> list[BaseRoute]:
        return [
            Route(ADMIN_PATH, self.overview, methods=["GET"]),
            Route(f"{ADMIN_PATH}/login", self.login, methods=["GET", "POST"]),
            Route(f"{ADMIN_PATH}/logout", self.logout, methods=["POST"]),
            Route(f"{ADMIN_PATH}/failed", self.failed, methods=["GET"]),
            Route(f"{ADMIN_PATH}/job", self.job, methods=["GET"]),
            Route(f"{ADMIN_PATH}/jobs/retry", self.retry, methods=["POST"]),
            Route(f"{ADMIN_PATH}/jobs/remove", self.remove, methods=["POST"]),
            Route(f"{ADMIN_PATH}/pause", self.pause, methods=["POST"]),
            Route(f"{ADMIN_PATH}/resume", self.resume, methods=["POST"]),
        ]

    # -- pages ----------------------------------------------------------------------------------------------

    def _usage_reader(self, request: Request) -> UsageLookup | None:
        state = getattr(request.app.state, "web", None)
        engine = getattr(state, "engine", None)
        if not isinstance(engine, AsyncEngine):
            return None
        return _usage_today(engine, self._default_quota)

    async def overview(self, request: Request) -> Response:
        session = self._page_session(request)
        if isinstance(session, Response):
            return session
        queue = _queue(request)
        overview = await read_overview(queue, stale_after_ms=self._stale_after_ms, usage=self._usage_reader(request))
        return self._render(
            request, "overview.html", session, overview=overview, chart_data=overview.chart_data(), page="overview"
        )

    async def failed(self, request: Request) -> Response:
        session = self._page_session(request)
        if isinstance(session, Response):
            return session
        queue = _queue(request)
        total = (await queue.counts())[JobState.FAILED]
        pages = max(1, -(-total // FAILED_PAGE_SIZE))
        page = min(max(1, _int_param(request.query_params.get("page"), 1)), pages)
        first = (page - 1) * FAILED_PAGE_SIZE
        jobs = await queue.get_jobs(JobState.FAILED, first, first + FAILED_PAGE_SIZE - 1)
        return self._render(
            request,
            "failed.html",
            session,
            jobs=[_job_view(j) for j in jobs],
            total=total,
            page_number=page,
            pages=pages,
            here=f"{ADMIN_PATH}/failed?page={page}",
            page="failed",
        )

    async def job(self, request: Request) -> Response:
        session = self._page_session(request)
        if isinstance(session, Response):
            return session
        job_id = request.query_params.get("id", "")
        found = await _queue(request).get(job_id) if job_id else None
        status = 200 if found is not None else 404
        view = _job_view(found) if found is not None else None
        here = f"{ADMIN_PATH}/job?{urlencode({'id': job_id})}"
        return self._render(request, "job.html", session, status=status, job=view, job_id=job_id, here=here, page="")

    # -- logging in and out ---------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if self._auth is None:
            return self._disabled()
        if self._auth.token_in_query(request.query_params):
            return self._login_page(request, QUERY_TOKEN_TEXT, status=401)
        if request.method == "GET":
            return self._login_page(request, "", status=200)
        refused = cross_site_reason(request.headers, request.headers.get("host", ""))
        if refused is not None:
            return self._forbidden(refused)
        client = request.client.host if request.client else ""
        wait_s = self._throttle.retry_after_s(client)
        if wait_s:
            log.warning("admin login throttled", client=client, retry_after_s=wait_s)
            response = self._login_page(request, f"Too many wrong tokens: try again in {wait_s} s.", status=429)
            response.headers["Retry-After"] = str(wait_s)
            return response
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        if not self._auth.token_matches(form.get("token", "")):
            self._throttle.failed(client)
            log.warning("admin login refused", client=client)
            return self._login_page(request, "That token is not right.", status=401)
        response = RedirectResponse(ADMIN_PATH, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self._auth.new_session(),
            max_age=SESSION_MAX_AGE_S,
            path=ADMIN_PATH,
            httponly=True,
            samesite="strict",
            secure=_is_https(request),
        )
        _no_store(response)
        log.info("admin logged in")
        return response

    async def logout(self, request: Request) -> Response:
        checked = await self._action(request)
        if isinstance(checked, Response):
            return checked
        response = RedirectResponse(f"{ADMIN_PATH}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=ADMIN_PATH, httponly=True, samesite="strict")
        return response

    # -- actions --------------------------------------------------------------------------------------------

    async def retry(self, request: Request) -> Response:
        return await self._job_action(request, "retried")

    async def remove(self, request: Request) -> Response:
        return await self._job_action(request, "removed")

    async def pause(self, request: Request) -> Response:
        checked = await self._action(request)
        if isinstance(checked, Response):
            return checked
        await _queue(request).pause()
        log.info("queue paused from the dashboard")
        return _back(checked[1], "paused")

    async def resume(self, request: Request) -> Response:
        checked = await self._action(request)
        if isinstance(checked, Response):
            return checked
        await _queue(request).resume()
        log.info("queue resumed from the dashboard")
        return _back(checked[1], "resumed")

    async def _job_action(self, request: Request, done: str) -> Response:
        checked = await self._action(request)
        if isinstance(checked, Response):
            return checked
        form = checked[1]
        job_id = form.get("job_id", "")
        queue = _queue(request)
        try:
            if done == "retried":
                await queue.retry(job_id)
            else:
                await queue.remove(job_id)
        except JobNotFoundError:
            return _back(form, "not_found", job_id)
        except JobStateError:
            return _back(form, "wrong_state", job_id)
        log.info("job changed from the dashboard", job_id=job_id, action=done)
        return _back(form, done, job_id)

    # -- access ---------------------------------------------------------------------------------------------

    def _page_session(self, request: Request) -> AdminSession | Response:
        """The request's session, or the response that refuses it (503 disabled, 401 no or wrong token)."""
        if self._auth is None:
            return self._disabled()
        if self._auth.token_in_query(request.query_params):
            return self._login_page(request, QUERY_TOKEN_TEXT, status=401)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None and not cookie.isascii():
            return self._forbidden("malformed session cookie: log in again")
        session = self._auth.authenticate(request.headers, request.cookies)
        if session is None:
            return self._login_page(request, "Log in with the admin token.", status=401)
        return session

    async def _action(self, request: Request) -> tuple[AdminSession, dict[str, str]] | Response:
        """A POST action's session and form, after the origin, session and CSRF checks."""
        if self._auth is None:
            return self._disabled()
        refused = cross_site_reason(request.headers, request.headers.get("host", ""))
        if refused is not None:
            return self._forbidden(refused)
        session = self._page_session(request)
        if isinstance(session, Response):
            return session
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        if not self._auth.csrf_valid(session, form.get(CSRF_FIELD, "")):
            return self._forbidden("missing or wrong CSRF token: reload the page and try again")
        return session, form

    # -- rendering ------------------------------------------------------------------------------------------

    def _render(
        self, request: Request, template: str, session: AdminSession | None, *, status: int = 200, **context: Any
    ) -> Response:
        nonce = secrets.token_urlsafe(16)
        notice = _notice(request.query_params.get("notice"), request.query_params.get("job", ""))
        csrf = self._auth.csrf_token(session) if self._auth is not None and session is not None else ""
        body = self._env.get_template(template).render(
            nonce=nonce, csrf=csrf, csrf_field=CSRF_FIELD, notice=notice, admin=ADMIN_PATH, **context
        )
        return _secured(HTMLResponse(body, status_code=status), nonce)

    def _login_page(self, request: Request, message: str, *, status: int) -> Response:
        response = self._render(request, "login.html", None, status=status, message=message, page="login")
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="slack-backend admin"'
        return response

    def _disabled(self) -> Response:
        nonce = secrets.token_urlsafe(16)
        body = self._env.get_template("disabled.html").render(nonce=nonce, text=DISABLED_TEXT, page="")
        return _secured(HTMLResponse(body, status_code=503), nonce)

    def _forbidden(self, reason: str) -> Response:
        log.warning("admin action refused", reason=reason)
        nonce = secrets.token_urlsafe(16)
        body = self._env.get_template("forbidden.html").render(nonce=nonce, reason=reason, page="", admin=ADMIN_PATH)
        return _secured(HTMLResponse(body, status_code=403), nonce)


def _usage_today(engine: AsyncEngine, default_quota: int) -> UsageLookup:
    """Each workspace's daily quota and tokens used today (UTC), from the database; empty if it does not answer."""

    async def read(workspaces: Sequence[str]) -> dict[str, tuple[int, int]]:
        since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        quotas, audit = QuotaStore(engine), AuditLog(engine)
        try:
            return {
                w: (await quotas.daily_tokens(w, default_quota), await audit.tokens_used(w, since=since))
                for w in workspaces
            }
        except SQLAlchemyError as exc:
            log.warning("dashboard: quota use unavailable", error=type(exc).__name__)
            return {}

    return read


def _queue(request: Request) -> Queue:
    queue = getattr(request.app.state, "queue", None)
    if not isinstance(queue, Queue):
        raise RuntimeError("the web app is not started: run it inside its lifespan")
    return queue


async def _read_form(request: Request) -> dict[str, str] | Response:
    """An urlencoded form body (the only kind our pages send), bounded in size; any other body has no fields, so
    it fails the token or CSRF check that follows."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                return HTMLResponse("form too large", status_code=413)
            chunks.append(chunk)
    except ClientDisconnect:
        return HTMLResponse("client disconnected", status_code=400)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        return HTMLResponse("form is not UTF-8", status_code=400)
    form: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        form.setdefault(name, value)
    return form


def _back(form: dict[str, str], notice: str, job_id: str = "") -> Response:
    """Redirect (303) to the page the form came from, with a notice saying what happened."""
    target = form.get("next", "")
    parts = urlsplit(target)
    # Only our own pages: no scheme, no host, no protocol-relative `//evil.example`.
    if parts.scheme or parts.netloc or not (parts.path == ADMIN_PATH or parts.path.startswith(f"{ADMIN_PATH}/")):
        parts = urlsplit(ADMIN_PATH)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("notice", "job")]
    query.append(("notice", notice))
    if job_id:
        query.append(("job", job_id))
    response = RedirectResponse(f"{parts.path}?{urlencode(query)}", status_code=303)
    _no_store(response)
    return response


def _notice(code: str | None, job_id: str) -> str:
    template = _NOTICES.get(code or "")
    return template.format(job=job_id) if template is not None else ""


def _job_view(job: Job) -> dict[str, Any]:
    """The fields of a job a page may show: never its data, result or progress (users' text lives there)."""
    return {
        **job.summary(),
        "stacktrace": job.stacktrace,
        "can_retry": job.state in (JobState.FAILED, JobState.COMPLETED),
        "can_remove": job.state is not JobState.ACTIVE,
    }


def _secured(response: Response, nonce: str) -> Response:
    """Headers every dashboard page carries: no caching, no framing, scripts and styles only with the nonce."""
    _no_store(response)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _is_https(request: Request) -> bool:
    # Behind a TLS-terminating proxy the scheme we see is http; the proxy's header only makes the cookie stricter.
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def _int_param(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _utc(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.0f} min"
    return f"{ms / 3_600_000:.1f} h"
