"""A running pipeline for tests: the real web app and an ai-responses worker, wired to fake Slack and Claude."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from slack_backend.config import Settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.queue import Queue, RateLimit, Worker, create_redis
from slack_backend.web import create_app
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.support.app import app_env, settings_from
from tests.support.engine import running
from tests.support.slack_requests import BOT_TOKEN, TEAM

API_KEY = "sk-ant-test-0123456789"


@dataclass
class Pipeline:
    """What a running pipeline gives a test: an HTTP client to the app, the queue, the worker and the fakes."""

    client: httpx.AsyncClient
    queue: Queue
    worker: Worker | None
    slack: FakeSlack
    claude: FakeAnthropic


PipelineFactory = Callable[..., contextlib.AbstractAsyncContextManager["Pipeline"]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM) as fake:
        yield fake


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def settings_for(
    redis_url: str, prefix: str, slack: FakeSlack, claude: FakeAnthropic, tmp_path: Path
) -> Callable[..., Settings]:
    base = {
        **app_env(redis_url, prefix, tmp_path, slack.base_url),
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": claude.base_url,
        "JOB_BACKOFF_MS": "200",
        "AI_RATE_LIMIT_MAX": "50",
    }

    def factory(**overrides: str) -> Settings:
        return settings_from(base, overrides)

    return factory


@pytest.fixture
def pipeline(settings_for: Callable[..., Settings], slack: FakeSlack, claude: FakeAnthropic) -> PipelineFactory:
    """`async with pipeline() as p:` runs the web app (lifespan and all) and an ai-responses worker.

    `slack_limits` replaces Slack's per-workspace call limits the worker keeps (tests scale a minute down).
    """

    @asynccontextmanager
    async def run(
        *,
        with_worker: bool = True,
        clock: Callable[[], datetime] | None = None,
        slack_limits: Mapping[str, RateLimit] | None = None,
        **overrides: str,
    ) -> AsyncIterator[Pipeline]:
        settings = settings_for(**overrides)
        redis = create_redis(settings.redis_url_value())
        app = create_app(settings, redis=redis)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(redis.aclose)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            )
            worker = None
            if with_worker:
                worker = await build_ai_worker(settings, redis, stack, clock=clock, slack_limits=slack_limits)
                await stack.enter_async_context(running(worker))
            yield Pipeline(client, ai_responses_queue(redis, settings), worker, slack, claude)

    return run
