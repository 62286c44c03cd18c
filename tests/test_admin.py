"""The /admin dashboard through the real app: token, sessions, CSRF and origin checks, actions, and no job data."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from slack_backend.config import Settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import Job, JobState, KeepJobs, Queue, UnrecoverableError, Worker
from slack_backend.web import create_app
from slack_backend.web._admin_auth import SESSION_COOKIE, LoginThrottle
from tests.support.app import Serve, SettingsFactory, served
from tests.support.engine import running, wait_until

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
MARKER = "MARKER-user-message-text-5d2e"
SAME_ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def make_settings(make_settings: SettingsFactory) -> SettingsFactory:
    """The shared settings with the dashboard on (ADMIN_TOKEN set)."""

    def factory(**overrides: str) -> Settings:
        return make_settings(**{"ADMIN_TOKEN": ADMIN_TOKEN, **overrides})

    return factory


@pytest.fixture
def serve(make_settings: SettingsFactory, redis_client: Redis) -> Serve:
    """Factory: `async with serve(**env) as client:` runs the real app on the test's Redis client."""

    def run(**overrides: str) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return served(make_settings(**overrides), redis=redis_client)

    return run


@pytest.fixture
def queue(redis_client: Redis, make_settings: Callable[..., Settings]) -> Queue:
    return ai_responses_queue(redis_client, make_settings())


async def seed(queue: Queue) -> None:
    """Jobs whose data and results hold MARKER: 3 failed (one reason with HTML in it), 2 completed, 1 waiting."""

    async def process(job: Job) -> dict[str, Any]:
        if job.id.startswith("fail-"):
            raise UnrecoverableError("slack said <b>no</b> & more")
        return {"echo": MARKER, "input_tokens": 1, "output_tokens": 1}

    for i in range(3):
        await queue.add("ai-response", {"text": f"{MARKER} {i}"}, job_id=f"fail-{i}", group="TFAILING")
    for i in range(2):
        await queue.add("ai-response", {"text": f"{MARKER} done {i}"}, job_id=f"done-{i}", group="TDONE")
    worker = Worker(queue, process, keep_completed=KeepJobs(count=100), idle_block_s=0.2)
    async with running(worker):

        async def all_finished() -> bool:
            c = await queue.counts()
            return (c[JobState.FAILED], c[JobState.COMPLETED]) == (3, 2)

        await wait_until(all_finished)
    await queue.add("ai-response", {"text": f"{MARKER} waiting"}, job_id="still-waiting", group="TWAITING")


async def log_in(client: httpx.AsyncClient) -> None:
    response = await client.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/admin")
    assert page.status_code == 200
    return csrf_of(page.text)


async def test_without_admin_token_every_page_is_503_with_no_data(serve: Serve, queue: Queue) -> None:
    """No ADMIN_TOKEN configured: every dashboard route answers 503 "dashboard disabled" and shows nothing else."""
    await seed(queue)
    async with serve(ADMIN_TOKEN="") as client:
        responses = [
            await client.get("/admin"),
            await client.get("/admin/login"),
            await client.get("/admin/failed"),
            await client.get("/admin/job?id=fail-0"),
            await client.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN),
            await client.post("/admin/pause", data={}, headers=SAME_ORIGIN),
        ]
    for response in responses:
        assert response.status_code == 503
        assert "dashboard disabled: set ADMIN_TOKEN" in response.text
        assert "fail-0" not in response.text
        assert MARKER not in response.text
    assert not await queue.is_paused()


async def test_missing_or_wrong_token_is_401_with_no_data(serve: Serve, queue: Queue) -> None:
    """No credentials, a wrong bearer token, or a forged session cookie: 401 and no queue data."""
    await seed(queue)
    async with serve() as client:
        anonymous = await client.get("/admin")
        wrong_bearer = await client.get("/admin/failed", headers={"Authorization": "Bearer not-the-admin-token-at-all"})
        forged = await client.get("/admin", headers={"Cookie": "sb_admin_session=v1.1700000000.abc.deadbeef"})
        wrong_login = await client.post("/admin/login", data={"token": "wrong-token-0123456789"}, headers=SAME_ORIGIN)
        job_page = await client.get("/admin/job?id=fail-0")
    for response in (anonymous, wrong_bearer, forged, wrong_login, job_page):
        assert response.status_code == 401
        assert "fail-0" not in response.text
        assert 'id="count-' not in response.text
        assert "set-cookie" not in response.headers


async def test_token_in_query_string_is_refused_even_when_right(serve: Serve, queue: Queue) -> None:
    """?token=<the right token> is refused with 401 (URLs leak into logs), even alongside a valid bearer header."""
    await seed(queue)
    async with serve() as client:
        alone = await client.get("/admin", params={"token": ADMIN_TOKEN})
        other_name = await client.get("/admin/failed", params={"q": ADMIN_TOKEN})
        with_header = await client.get(
            "/admin", params={"token": ADMIN_TOKEN}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        login = await client.post(
            "/admin/login", params={"token": ADMIN_TOKEN}, data={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN
        )
    for response in (alone, other_name, with_header, login):
        assert response.status_code == 401
        assert "Tokens in URLs are refused" in response.text
        assert "fail-0" not in response.text
        assert "set-cookie" not in response.headers


async def test_login_cookie_is_httponly_strict_and_never_the_token(serve: Serve, queue: Queue) -> None:
    """The login form sets an HttpOnly, SameSite=Strict session cookie holding an HMAC, then pages show counts."""
    await seed(queue)
    async with serve() as client:
        login = await client.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN)
        page = await client.get("/admin")
        client.cookies.clear()
        bearer = await client.get("/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("sb_admin_session=")
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "path=/admin" in cookie.lower()
    assert ADMIN_TOKEN not in cookie
    assert page.status_code == 200
    assert re.search(r'id="count-failed">3<', page.text)
    assert re.search(r'id="count-completed">2<', page.text)
    assert re.search(r'id="count-waiting">1<', page.text)
    assert "TWAITING" in page.text  # busiest workspaces
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert bearer.status_code == 200


async def test_cross_site_posts_are_refused(serve: Serve, queue: Queue) -> None:
    """A logged-in session's POST with a valid CSRF token but a foreign Origin, Referer or Sec-Fetch-Site: 403."""
    async with serve() as client:
        await log_in(client)
        token = await csrf(client)
        form = {"csrf_token": token, "next": "/admin"}
        evil_origin = await client.post("/admin/pause", data=form, headers={"Origin": "https://evil.example"})
        null_origin = await client.post("/admin/pause", data=form, headers={"Origin": "null"})
        evil_referer = await client.post("/admin/pause", data=form, headers={"Referer": "https://evil.example/x"})
        fetch_site = await client.post("/admin/pause", data=form, headers={"Sec-Fetch-Site": "cross-site"})
        evil_login = await client.post(
            "/admin/login", data={"token": ADMIN_TOKEN}, headers={"Origin": "https://evil.example"}
        )
    for response in (evil_origin, null_origin, evil_referer, fetch_site, evil_login):
        assert response.status_code == 403
        assert "cross-site request refused" in response.text
    assert not await queue.is_paused()


async def test_posts_without_the_sessions_csrf_token_are_refused(serve: Serve, queue: Queue) -> None:
    """Same-origin POSTs with no CSRF token, a wrong one, or another session's token: 403, nothing changes."""
    await seed(queue)
    async with serve() as other:
        await log_in(other)
        other_token = await csrf(other)
    async with serve() as client:
        await log_in(client)
        missing = await client.post("/admin/pause", data={"next": "/admin"}, headers=SAME_ORIGIN)
        wrong = await client.post("/admin/pause", data={"csrf_token": "0" * 64}, headers=SAME_ORIGIN)
        foreign = await client.post(
            "/admin/jobs/remove", data={"csrf_token": other_token, "job_id": "fail-0"}, headers=SAME_ORIGIN
        )
        bearer_without = await client.post(
            "/admin/pause", data={}, headers={**SAME_ORIGIN, "Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    for response in (missing, wrong, foreign, bearer_without):
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert not await queue.is_paused()
    assert await queue.get("fail-0") is not None


async def test_retry_and_remove_from_the_failed_list(serve: Serve, queue: Queue) -> None:
    """Retry sends a failed job back to waiting with attempts reset; remove deletes one; both redirect back."""
    await seed(queue)
    async with serve() as client:
        await log_in(client)
        failed_page = await client.get("/admin/failed")
        token = csrf_of(failed_page.text)
        retried = await client.post(
            "/admin/jobs/retry",
            data={"csrf_token": token, "job_id": "fail-1", "next": "/admin/failed?page=1"},
            headers=SAME_ORIGIN,
        )
        removed = await client.post(
            "/admin/jobs/remove",
            data={"csrf_token": token, "job_id": "fail-2", "next": "https://evil.example/"},
            headers=SAME_ORIGIN,
        )
        gone = await client.post(
            "/admin/jobs/retry",
            data={"csrf_token": token, "job_id": "fail-2", "next": "/admin/failed"},
            headers=SAME_ORIGIN,
        )
        after = await client.get(retried.headers["location"])
    assert failed_page.status_code == 200
    assert all(f'data-job-id="fail-{i}"' in failed_page.text for i in range(3))
    assert retried.status_code == 303
    assert retried.headers["location"].startswith("/admin/failed?page=1&notice=retried")
    job = await queue.get("fail-1")
    assert job is not None
    assert job.state is JobState.WAITING
    assert job.attempts_made == 0
    assert removed.status_code == 303
    assert removed.headers["location"].startswith("/admin?")  # an outside `next` falls back to the dashboard
    assert await queue.get("fail-2") is None
    assert "notice=not_found" in gone.headers["location"]
    assert "Job fail-1 was sent back to waiting" in after.text
    assert 'data-job-id="fail-1"' not in after.text
    assert 'data-job-id="fail-0"' in after.text


async def test_pause_and_resume(serve: Serve, queue: Queue) -> None:
    """The pause and resume buttons pause and resume the queue, and the page says which it is."""
    async with serve() as client:
        await log_in(client)
        token = await csrf(client)
        paused = await client.post("/admin/pause", data={"csrf_token": token, "next": "/admin"}, headers=SAME_ORIGIN)
        assert await queue.is_paused()
        paused_page = await client.get(paused.headers["location"])
        resumed = await client.post("/admin/resume", data={"csrf_token": token}, headers=SAME_ORIGIN)
        assert not await queue.is_paused()
        resumed_page = await client.get(resumed.headers["location"])
    assert (paused.status_code, resumed.status_code) == (303, 303)
    assert 'id="paused-badge"' in paused_page.text
    assert 'id="resume"' in paused_page.text
    assert 'id="running-badge"' in resumed_page.text
    assert 'id="pause"' in resumed_page.text


async def test_logout_tells_the_browser_to_drop_the_cookie(serve: Serve) -> None:
    """Logout answers with a Set-Cookie that expires the session cookie, so the browser's next page is 401.

    Sessions are stateless HMACs: logout cannot revoke a copy of the cookie (the next test shows what does)."""
    async with serve() as client:
        await log_in(client)
        token = await csrf(client)
        out = await client.post("/admin/logout", data={"csrf_token": token}, headers=SAME_ORIGIN)
        after = await client.get("/admin")
    assert out.status_code == 303
    expiring = [h for h in out.headers.get_list("set-cookie") if "Max-Age=0" in h or "expires=Thu, 01 Jan 1970" in h]
    assert len(expiring) == 1, out.headers.get_list("set-cookie")
    assert expiring[0].startswith(f"{SESSION_COOKIE}=")
    assert after.status_code == 401


async def test_a_copied_session_cookie_outlives_logout_until_the_token_changes(serve: Serve) -> None:
    """A session cookie copied before logout still opens /admin after it; changing ADMIN_TOKEN ends it (the docs'
    "changing the token ends every session")."""
    async with serve() as client:
        await log_in(client)
        copied = dict(client.cookies)
        token = await csrf(client)
        await client.post("/admin/logout", data={"csrf_token": token}, headers=SAME_ORIGIN)
        client.cookies.clear()
        client.cookies.update(copied)
        assert (await client.get("/admin")).status_code == 200, "stateless: logout does not revoke a copy"
    async with serve(ADMIN_TOKEN="a-rotated-admin-token-9876543210") as client:
        client.cookies.update(copied)
        assert (await client.get("/admin")).status_code == 401


async def test_pages_never_show_job_data_and_escape_reasons(serve: Serve, queue: Queue) -> None:
    """No admin page ever contains job data or results (MARKER); failure reasons are shown, HTML-escaped."""
    await seed(queue)
    async with serve() as client:
        pages = [await client.get("/admin/login")]
        await log_in(client)
        pages += [
            await client.get("/admin"),
            await client.get("/admin/failed"),
            await client.get("/admin/failed?page=2"),
            *[
                await client.get("/admin/job", params={"id": job_id})
                for job_id in ("fail-0", "done-0", "still-waiting")
            ],
            await client.get("/admin/job", params={"id": "no-such-job"}),
        ]
    assert [p.status_code for p in pages] == [200, 200, 200, 200, 200, 200, 200, 404]
    for page in pages:
        assert MARKER not in page.text
    failed_page = pages[2].text
    assert "slack said &lt;b&gt;no&lt;/b&gt; &amp; more" in failed_page
    assert "<b>no</b>" not in failed_page
    assert "UnrecoverableError" in pages[4].text  # the stack, escaped into <pre>


async def test_login_failures_are_throttled_per_client(
    make_settings: Callable[..., Settings], redis_client: Redis
) -> None:
    """Five wrong tokens from one client in a minute: its next try gets 429 (even the right token); others do not."""
    app = create_app(make_settings(), redis=redis_client)

    def client_at(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async with app.router.lifespan_context(app), client_at("10.0.0.1") as guesser, client_at("10.0.0.2") as other:
        wrong = [
            (await guesser.post("/admin/login", data={"token": f"guess-{i}"}, headers=SAME_ORIGIN)).status_code
            for i in range(5)
        ]
        blocked = await guesser.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN)
        elsewhere = await other.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN)
    assert wrong == [401] * 5
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert elsewhere.status_code == 303


def test_login_throttle_forgets_failures_after_its_window() -> None:
    """The throttle counts failures per client in a sliding window: past the window the client may try again."""
    now = [1000.0]
    throttle = LoginThrottle(max_failures=5, window_s=60, clock=lambda: now[0])
    for _ in range(5):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after_s("10.0.0.1") == 60
    assert throttle.retry_after_s("10.0.0.9") == 0
    now[0] += 59.5
    assert throttle.retry_after_s("10.0.0.1") == 1
    now[0] += 1
    assert throttle.retry_after_s("10.0.0.1") == 0


async def test_malformed_session_cookie_or_csrf_token_gets_403_not_500(serve: Serve) -> None:
    """A non-ASCII session cookie or CSRF token is refused with 403, never a 500 from the comparison."""
    async with serve() as client:
        await log_in(client)
        page = await client.get("/admin")
        assert page.status_code == 200
        bad_csrf = await client.post("/admin/pause", data={"csrf_token": "\u00e9\u00e9"}, headers=SAME_ORIGIN)
        client.cookies.clear()
        cookie = {b"Cookie": "sb_admin_session=1.2.3.\u00e9".encode()}
        bad_cookie = await client.get("/admin", headers=cookie)
    assert bad_csrf.status_code == 403
    assert bad_cookie.status_code == 403


async def test_cookie_session_survives_a_basic_auth_proxy_header(serve: Serve) -> None:
    """Behind an auth_basic proxy (Authorization: Basic on every request) the session cookie still works."""
    async with serve() as client:
        await log_in(client)
        page = await client.get("/admin", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        wrong_bearer = await client.get("/admin", headers={"Authorization": "Bearer not-the-admin-token-at-all"})
    assert page.status_code == 200
    assert wrong_bearer.status_code == 401, "a wrong bearer token is not rescued by the cookie"
