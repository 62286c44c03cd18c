"""Redis topology settings, and the start-up check of how the server evicts and persists keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from slack_backend.config import ConfigError, load_settings
from slack_backend.queue import JobState, RedisTarget, create_redis, server_safety, warn_unsafe_server
from slack_backend.web import create_app, web_state
from slack_backend.web.ingress import ACK_TEXT
from tests.fakes.slack_server import FakeSlack
from tests.support.sentinel_cluster import RedisProc
from tests.support.slack_requests import (
    BOT_TOKEN,
    EVENT_ID,
    SECRET,
    TEAM,
    TRIGGER_ID,
    command_body,
    mention_body,
    post_signed,
)
from tests.test_config import run_cli

SENTINEL_SECRET = "sentinel-pass-3f9a1c"


@pytest.fixture
def risky_server(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server that evicts keys under memory pressure but keeps an AOF."""
    node = RedisProc(tmp_path / "risky", ["--maxmemory-policy", "allkeys-lru", "--appendonly", "yes"])
    node.start()
    yield node
    node.stop()


@pytest.fixture
def tight_lipped_server(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server with CONFIG renamed away, as managed Redis services often do."""
    node = RedisProc(tmp_path / "managed", ["--rename-command", "CONFIG", ""])
    node.start()
    yield node
    node.stop()


async def test_unsafe_settings_are_reported_and_logged_loudly(risky_server: RedisProc) -> None:
    """An evicting server is reported (with the setting to change) and logged as an error at start."""
    client = create_redis(f"redis://127.0.0.1:{risky_server.port}/0")
    try:
        with capture_logs() as logs:
            safety = await warn_unsafe_server(client, component="worker")
    finally:
        await client.aclose()
    assert safety.describe() == {"maxmemory_policy": "allkeys-lru", "aof": "on", "rdb_save": "off"}
    assert len(safety.problems) == 1
    assert "noeviction" in safety.problems[0]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["component"] for e in errors] == ["worker"]
    assert "allkeys-lru" in errors[0]["problem"]


async def test_no_persistence_is_reported(redis_url: str) -> None:
    """The test server (no AOF, no RDB save) is reported as losing every job on a restart."""
    client = create_redis(redis_url)
    try:
        safety = await server_safety(client)
    finally:
        await client.aclose()
    assert (safety.aof, safety.rdb_saves, safety.maxmemory_policy) == (False, False, "noeviction")
    assert len(safety.problems) == 1
    assert "persistence is off" in safety.problems[0]


async def test_a_refused_config_get_reads_unknown(tight_lipped_server: RedisProc) -> None:
    """Where CONFIG GET is refused, each setting reads `unknown`, nothing is claimed, and a warning says so."""
    client = create_redis(f"redis://127.0.0.1:{tight_lipped_server.port}/0")
    try:
        with capture_logs() as logs:
            safety = await warn_unsafe_server(client, component="web")
    finally:
        await client.aclose()
    assert safety.describe() == {"maxmemory_policy": "unknown", "aof": "unknown", "rdb_save": "unknown"}
    assert safety.problems == []
    assert any("unknown" in e["event"] and e["log_level"] == "warning" for e in logs)


async def test_readyz_shows_the_redis_settings(risky_server: RedisProc, tmp_path: Path) -> None:
    """/readyz detail carries the eviction policy and persistence, and the warning for an evicting server."""
    settings = load_settings(
        {
            "REDIS_URL": f"redis://127.0.0.1:{risky_server.port}/0",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}",
        }
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        body = (await client.get("/readyz")).json()
    assert body["status"] == "ok"
    assert body["redis"]["maxmemory_policy"] == "allkeys-lru"
    assert body["redis"]["aof"] == "on"
    assert len(body["redis"]["warnings"]) == 1


def test_check_config_shows_server_settings_and_masks_the_sentinel_password(risky_server: RedisProc) -> None:
    """`check-config` shows the server's eviction policy and warnings, and the Sentinel settings with the
    Sentinel password masked (a Sentinel that does not answer leaves the server settings `unknown`)."""
    direct = run_cli("check-config", "--json", env={"REDIS_URL": f"redis://127.0.0.1:{risky_server.port}/0"})
    assert direct.returncode == 0, direct.stderr
    shown = json.loads(direct.stdout)
    assert shown["(redis server) maxmemory_policy"] == "allkeys-lru"
    assert "noeviction" in shown["(redis server) warnings"]

    env = {
        "REDIS_SENTINELS": "127.0.0.1:1,127.0.0.1:2",
        "REDIS_SENTINEL_MASTER": "jobs",
        "REDIS_SENTINEL_PASSWORD": SENTINEL_SECRET,
    }
    via_sentinel = run_cli("check-config", "--json", env=env)
    assert via_sentinel.returncode == 0, via_sentinel.stderr
    assert SENTINEL_SECRET not in via_sentinel.stdout + via_sentinel.stderr
    shown = json.loads(via_sentinel.stdout)
    assert shown["REDIS_SENTINELS"] == "127.0.0.1:1,127.0.0.1:2"
    assert shown["REDIS_SENTINEL_MASTER"] == "jobs"
    assert shown["REDIS_SENTINEL_PASSWORD"] == "********"
    assert shown["(redis server) maxmemory_policy"] == "unknown"


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({"REDIS_SENTINELS": "127.0.0.1"}, "REDIS_SENTINELS", "is not host:port"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER", "is required when REDIS_SENTINELS"),
        ({"REDIS_SENTINEL_MASTER": "jobs"}, "REDIS_SENTINELS", "is required when REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_PASSWORD": "x"}, "REDIS_SENTINEL_PASSWORD", "only used with REDIS_SENTINELS"),
        ({"REDIS_CLUSTER_NODES": "a:1,b:x"}, "REDIS_CLUSTER_NODES", "is not host:port"),
        (
            {"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_CLUSTER_NODES": "b:2"},
            "REDIS_CLUSTER_NODES",
            "one Redis topology",
        ),
        ({"REDIS_URL": "redis+cluster://"}, "REDIS_URL", "lists no host:port"),
        ({"REDIS_MIN_REPLICAS_ACK": "-1"}, "REDIS_MIN_REPLICAS_ACK", ""),
    ],
)
def test_bad_topology_settings_are_refused(env: dict[str, str], variable: str, reason: str) -> None:
    """Each malformed or contradictory Redis topology setting is refused, naming the variable and why."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    problems = dict(caught.value.problems)
    assert variable in problems
    assert reason in problems[variable]


def test_settings_build_each_target() -> None:
    """REDIS_SENTINELS, REDIS_CLUSTER_NODES and a redis+cluster:// URL each give the matching RedisTarget."""
    sentinel = load_settings(
        {
            "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
            "REDIS_SENTINEL_MASTER": "jobs",
            "REDIS_URL": "redis://:pw@x/2",
        }
    ).redis_target()
    assert sentinel == RedisTarget(
        url="redis://:pw@x/2", sentinels=(("10.0.0.1", 26379), ("::1", 26380)), sentinel_master="jobs"
    )
    assert sentinel.kind == "sentinel"
    cluster = load_settings({"REDIS_CLUSTER_NODES": "a:7000,b:7001"}).redis_target()
    assert (cluster.kind, cluster.cluster_nodes) == ("cluster", (("a", 7000), ("b", 7001)))
    assert load_settings({"REDIS_URL": "redis+cluster://a:7000"}).redis_target().kind == "cluster"
    assert load_settings({}).redis_target().kind == "single"


async def test_unreplicated_adds_at_ingress(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """With REDIS_MIN_REPLICAS_ACK=1 and no replica: an event is answered 503 (Slack re-delivers, nothing is
    added twice) and a command is acked as queued, not told to try again (its job is stored and will run)."""
    async with FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM) as fake_slack:
        settings = load_settings(
            {
                "REDIS_URL": redis_url,
                "REDIS_PREFIX": prefix,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_API_URL": fake_slack.base_url,
                "REDIS_MIN_REPLICAS_ACK": "1",
                "REDIS_REPLICAS_ACK_TIMEOUT_MS": "50",
                "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'acks.db'}",
            }
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
        ):
            event = await post_signed(client, mention_body())
            redelivered = await post_signed(client, mention_body())
            command = await post_signed(client, command_body(fake_slack))
            jobs = await web_state(app).queue.get_jobs(JobState.WAITING)
    assert (event.status_code, redelivered.status_code) == (503, 503)
    assert command.status_code == 200
    assert command.json()["text"] == ACK_TEXT
    assert sorted(job.id for job in jobs) == sorted([EVENT_ID, TRIGGER_ID])
