"""The admin dashboard in headless Chromium: log in, read the counts, retry a failed job, watch it complete."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait
from starlette.applications import Starlette

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import Job, JobState, UnrecoverableError, Worker
from slack_backend.web import create_app
from tests.support.engine import running, wait_until
from tests.support.slack_requests import BOT_TOKEN, SECRET

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1500",
)
ADMIN_TOKEN = "admin-token-for-the-browser-0123456789"
MARKER = "MARKER-browser-user-text-91ab"
RETRIED_JOB = "browser-job"
WAIT_S = 15


def require_browser() -> None:
    """Skip (or, with REQUIRE_BROWSER=1, fail) when Debian's chromium or chromedriver is not installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = f"headless browser test needs {' and '.join(missing)}: run scripts/ensure-chromium.sh"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test, not Ctrl-C wiring, decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def live_server(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` (lifespan included) on a free loopback port in this event loop; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def start_chromium(profile: Path, log_file: Path) -> WebDriver:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_file))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    return driver


def text_of(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def drive_dashboard(base_url: str, tmp_path: Path, screenshot: Path) -> None:
    """What an operator does, in a real browser (blocking: run it in a thread while the server serves)."""
    driver = start_chromium(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
    wait = WebDriverWait(driver, WAIT_S)
    try:
        driver.get(f"{base_url}/admin")
        assert "Log in" in driver.title
        driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        driver.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "count-failed")))
        assert (text_of(driver, "count-failed"), text_of(driver, "count-completed")) == ("1", "3")
        # The charts' script ran under the page's CSP nonce and drew something.
        drawn = driver.execute_script(
            "const c = document.getElementById('chart-throughput');"
            "return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v !== 0);"
        )
        assert drawn is True

        driver.find_element(By.ID, "failed-link").click()
        row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-job-id="{RETRIED_JOB}"]')))
        assert "first try fails on purpose" in row.text
        row.find_element(By.CSS_SELECTOR, "button.retry").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "notice"), f"Job {RETRIED_JOB} was sent back"))

        driver.get(f"{base_url}/admin/job?id={RETRIED_JOB}")

        def completed(d: Any) -> bool:
            if text_of(d, "job-state") == "completed":
                return True
            d.refresh()
            return False

        WebDriverWait(driver, WAIT_S, poll_frequency=0.3).until(completed)

        driver.get(f"{base_url}/admin")
        assert (text_of(driver, "count-failed"), text_of(driver, "count-completed")) == ("0", "4")
        assert MARKER not in driver.page_source
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()


async def test_dashboard_in_headless_chromium(redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path) -> None:
    """Log in, see the counts and charts, retry the failed job from the failed list, see it complete; screenshot."""
    require_browser()
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}",
        }
    )
    queue = ai_responses_queue(redis_client, settings)
    calls: Counter[str] = Counter()

    async def process(job: Job) -> dict[str, Any]:
        calls[job.id] += 1
        if job.id == RETRIED_JOB and calls[job.id] == 1:
            raise UnrecoverableError("first try fails on purpose")
        return {"input_tokens": 3, "output_tokens": 2, "echo": MARKER}

    for i in range(3):
        await queue.add("ai-response", {"text": f"{MARKER} {i}"}, job_id=f"ok-{i}", group="TBROWSER")
    await queue.add("ai-response", {"text": MARKER}, job_id=RETRIED_JOB, group="TBROWSER")
    worker = Worker(queue, process, idle_block_s=0.2)
    screenshot = tmp_path / "dashboard.png"
    async with running(worker), live_server(create_app(settings, redis=redis_client)) as base_url:

        async def seeded() -> bool:
            counts = await queue.counts()
            return (counts[JobState.COMPLETED], counts[JobState.FAILED]) == (3, 1)

        await wait_until(seeded)
        await asyncio.to_thread(drive_dashboard, base_url, tmp_path, screenshot)

    assert screenshot.exists()
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert calls[RETRIED_JOB] == 2
    job = await queue.get(RETRIED_JOB)
    assert job is not None
    assert job.state is JobState.COMPLETED
