"""The dashboard and metrics show workspaces: the busiest with waiting counts, token budget use and quota use."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from slack_backend.config import load_settings
from slack_backend.jobs.queues import ai_responses_queue
from slack_backend.queue import BulkJob, JobOptions, QueueLimits, TokenBudget
from slack_backend.store import AuditLog, QuotaStore, create_engine, create_tables
from tests.support.app import served

ADMIN_TOKEN = "admin-token-for-tests-0123456789"


async def test_overview_and_metrics_show_workspaces_budget_and_quota(
    redis_url: str, prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    """Busiest workspaces with waiting counts, budget use against its limit, and tokens used today against quota."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "DATABASE_URL": database_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "METRICS_TOKEN": ADMIN_TOKEN + "-metrics",
            "WORKSPACE_DAILY_TOKEN_QUOTA": "90000",
        }
    )
    queue = ai_responses_queue(redis_client, settings)
    await queue.set_limits(QueueLimits(budget=TokenBudget(20_000, 60_000)))
    await queue.add("ai-response", {}, group="T0BUSY001", cost=1_500)
    await queue.add_bulk([BulkJob("ai-response", {}, JobOptions(group="T0BUSY001")) for _ in range(7)])
    await queue.add_bulk([BulkJob("ai-response", {}, JobOptions(group="T0CALM001")) for _ in range(2)])
    await queue.call("fetch", "dashboard-test", 30_000, 1)  # the costed job starts and reserves 1,500 tokens
    engine = create_engine(database_url)
    try:
        await create_tables(engine)
        await QuotaStore(engine).set_daily_tokens("T0CALM001", 5_000)
        audit = AuditLog(engine)
        await audit.record_queued("done-1", "T0BUSY001", "U0USER1", "C0CHAN1", "mention")
        await audit.record_finished("done-1", "completed", input_tokens=1_000, output_tokens=200)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with served(settings, redis=redis_client) as client:
            page = (await client.get("/admin", headers=headers)).text
            metrics = (await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}-metrics"})).text
    finally:
        await engine.dispose()
    busy_row = page[page.index("T0BUSY001") :].split("</tr>", 1)[0]
    calm_row = page[page.index("T0CALM001") :].split("</tr>", 1)[0]
    assert page.index("T0BUSY001") < page.index("T0CALM001"), "the busiest comes first"
    assert "1,200 / 90,000" in busy_row
    assert "0 / 5,000" in calm_row
    assert "1,500 of 20,000 estimated tokens" in page
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("slack_backend_token_budget_limit", (("queue", "ai-responses"),))] == 20_000
    assert samples[("slack_backend_token_budget_used", (("queue", "ai-responses"),))] == 1_500
    busy = (("queue", "ai-responses"), ("state", "waiting"), ("workspace", "T0BUSY001"))
    assert samples[("slack_backend_workspace_jobs", busy)] == 7
