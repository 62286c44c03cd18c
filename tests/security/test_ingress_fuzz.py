"""Fuzzing /slack/events: 10,000 hostile bodies and headers give no 5xx, create no job, and leave the app healthy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slack_backend.config import load_settings
from slack_backend.queue import create_redis
from slack_backend.slack.signing import sign_request
from slack_backend.web import create_app, web_state
from tests.support.slack_requests import SECRET

CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data", "", "a/b; c=d"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
SLACK_KEYS = st.sampled_from(
    ["type", "event", "team_id", "user", "text", "ts", "channel", "event_id", "command", "trigger_id", "payload"]
)
SLACK_SHAPED = st.dictionaries(SLACK_KEYS | st.text(max_size=8), JSON_VALUES, max_size=8)


def _body(kind: str, raw: bytes, shaped: dict[str, object]) -> bytes:
    if kind == "raw":
        return raw
    if kind == "json":
        return json.dumps(shaped, default=str).encode()
    if kind == "form":
        return urlencode({k: json.dumps(v, default=str) for k, v in shaped.items()}).encode()
    return urlencode({"payload": json.dumps(shaped, default=str)}).encode()


class Harness:
    """The real app on a real Redis, driven from a private event loop so hypothesis can call it synchronously."""

    def __init__(self, redis_url: str, prefix: str, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        # No bot token (the requests carry none either) and a database of the test's own, not ./slack-backend.db.
        env = {
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "SLACK_SIGNING_SECRET": SECRET,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        }
        self.redis = create_redis(redis_url)
        self.app = create_app(load_settings(env), redis=self.redis)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")
        self.statuses: dict[int, int] = {}

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        response = self.loop.run_until_complete(self.client.post("/slack/events", content=body, headers=headers))
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        return response.status_code

    def jobs(self) -> int:
        queue = web_state(self.app).queue
        return sum(self.loop.run_until_complete(queue.counts()).values())

    def healthy(self) -> bool:
        response = self.loop.run_until_complete(self.client.get("/readyz"))
        return response.status_code == 200

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.run_until_complete(self.redis.aclose())
        self.loop.close()


@pytest.fixture
def harness(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(redis_url, prefix, tmp_path)
    yield h
    h.close()


# print_blob: a failure in CI prints the @reproduce_failure line that replays it locally.
FUZZ = settings(
    max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_unsigned_and_forged_requests_are_refused(harness: Harness) -> None:
    """5,000 bodies with missing, forged, stale or malformed signature headers: all 4xx, no job, still healthy."""

    @FUZZ
    @given(
        kind=st.sampled_from(["raw", "json", "form", "payload"]),
        raw=st.binary(max_size=300),
        shaped=SLACK_SHAPED,
        content_type=CONTENT_TYPES,
        timestamp=st.one_of(st.none(), st.integers(), st.text(max_size=12)),
        signature=st.one_of(st.none(), st.text(max_size=80), st.just("v0=" + "0" * 64)),
        extra=st.dictionaries(
            st.sampled_from(["X-Slack-Retry-Num", "Content-Length", "X-Request-ID"]), st.text(max_size=20)
        ),
    )
    def one(
        kind: str,
        raw: bytes,
        shaped: dict[str, object],
        content_type: str,
        timestamp: int | str | None,
        signature: str | None,
        extra: dict[str, str],
    ) -> None:
        headers = {"Content-Type": content_type, **{k: v for k, v in extra.items() if v.isascii() and v.isprintable()}}
        if timestamp is not None and str(timestamp).isascii() and str(timestamp).isprintable():
            headers["X-Slack-Request-Timestamp"] = str(timestamp)
        if signature is not None and signature.isascii() and signature.isprintable():
            headers["X-Slack-Signature"] = signature
        status = harness.post(_body(kind, raw, shaped), headers)
        assert 400 <= status < 500, status

    started = time.monotonic()
    one()
    print(f"\nunsigned fuzz: {harness.statuses} in {time.monotonic() - started:.1f} s")
    assert harness.jobs() == 0
    assert harness.healthy()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_correctly_signed_garbage_is_handled_without_5xx(harness: Harness) -> None:
    """5,000 correctly signed but malformed bodies: no 5xx, no job created, the app stays healthy."""

    @FUZZ
    @given(
        kind=st.sampled_from(["raw", "json", "form", "payload"]),
        raw=st.binary(max_size=300),
        shaped=SLACK_SHAPED,
        content_type=CONTENT_TYPES,
    )
    def one(kind: str, raw: bytes, shaped: dict[str, object], content_type: str) -> None:
        body = _body(kind, raw, shaped)
        headers = {"Content-Type": content_type, **sign_request(SECRET, body)}
        status = harness.post(body, headers)
        assert status < 500, status

    started = time.monotonic()
    one()
    print(f"\nsigned fuzz: {harness.statuses} in {time.monotonic() - started:.1f} s")
    assert harness.jobs() == 0
    assert harness.healthy()
