"""The one way tests build the web app: settings for this test's Redis prefix, the fake Slack and a tmp_path
database (never a file in the checkout), and the real app served in-process with an httpx client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from slack_backend.config import Settings, load_settings
from slack_backend.web import create_app
from tests.fakes.slack_server import FakeSlack
from tests.support.slack_requests import BOT_TOKEN, SECRET

if TYPE_CHECKING:
    from slack_backend.web.metrics import Metrics

SettingsFactory = Callable[..., Settings]
"""make_settings(**variables) -> Settings; a variable given as "" is left unset."""

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
"""serve(**variables) -> `async with` an httpx client to the running app."""


def app_env(redis_url: str, prefix: str, tmp_path: Path, slack_api_url: str) -> dict[str, str]:
    """The variables every in-process app of a test starts from."""
    return {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        # Always a file of this test's own: the default ./slack-backend.db would land in the repo root.
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        # Never the real Slack: the fake of this test answers every Web API call.
        "SLACK_API_URL": slack_api_url,
    }


def settings_from(base: Mapping[str, str], overrides: Mapping[str, str]) -> Settings:
    """load_settings over `base` updated with `overrides`; an override of "" removes the variable."""
    env = {**base, **overrides}
    return load_settings({key: value for key, value in env.items() if value})


@pytest.fixture
def make_settings(redis_url: str, prefix: str, tmp_path: Path, slack: FakeSlack) -> SettingsFactory:
    """Factory: make_settings(**variables) -> Settings for this test (see `app_env`); keyword arguments win."""
    base = app_env(redis_url, prefix, tmp_path, slack.base_url)

    def factory(**overrides: str) -> Settings:
        return settings_from(base, overrides)

    return factory


@asynccontextmanager
async def served(
    settings: Settings,
    *,
    redis: Redis | None = None,
    metrics: Metrics | None = None,
    expect_workers: bool = False,
    quiet: bool = False,
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (its lifespan, and its own Redis client unless `redis` is given) and an httpx client to it.

    `quiet` captures the app's log lines instead of printing them (a fault test's own figures stay readable).
    """
    app = create_app(settings, redis=redis, metrics=metrics, expect_workers=expect_workers)
    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(capture_logs())
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            yield client


@pytest.fixture
def serve(make_settings: SettingsFactory) -> Serve:
    """Factory: `async with serve(**variables) as client:` runs the real app for this test's settings."""

    def run(**overrides: str) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return served(make_settings(**overrides))

    return run
