"""Click-to-updated-card latency of Refine and Regenerate: the real web app and worker, fake Slack and Claude.

Run from the repository root with a redis-server on 127.0.0.1:6379: `python -m bench.card_latency [--clicks 40]`.
Each click's time runs from the signed request going in to the fake Slack's receipt of the card's replacement at
the click's response_url, minus the fake model's fixed delay (Send as me calls no model: nothing subtracted; the
draft is set back to unsent between its clicks). Prints p50/p99; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from slack_sdk.oauth.installation_store import Installation
from structlog.testing import capture_logs
from tests.fakes.anthropic_server import Behaviour, FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.support.card_requests import click, refine_values, submit
from tests.support.engine import running, wait_until
from tests.support.slack_requests import BOT_TOKEN, SECRET, TEAM, USER, post_signed, shortcut_body

from slack_backend.config import load_settings
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.queue import create_redis
from slack_backend.slack import card
from slack_backend.store import TokenCipher, create_engine, installation_store
from slack_backend.store.suggestions import suggestions_table
from slack_backend.web import create_app

API_KEY = "sk-ant-bench-0123456789"
CLIENT_ID = "1111.2222"
KEY = TokenCipher.new_key()
MODEL_DELAY_S = 0.2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(clicks: int, redis_url: str) -> None:
    async with (
        FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM) as slack,
        FakeAnthropic(api_key=API_KEY) as claude,
    ):
        tmp = Path(tempfile.mkdtemp(prefix="card-bench-"))
        settings = load_settings(
            {
                "REDIS_URL": redis_url,
                "REDIS_PREFIX": f"bench-card-{secrets.token_hex(4)}",
                "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'db.sqlite'}",
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_CLIENT_ID": CLIENT_ID,
                "SLACK_CLIENT_SECRET": "bench-secret",
                "TOKEN_ENCRYPTION_KEY": KEY,
                "PUBLIC_URL": "https://drafts.example.com",
                "SLACK_API_URL": slack.base_url,
                "ANTHROPIC_API_KEY": API_KEY,
                "ANTHROPIC_BASE_URL": claude.base_url,
                "AI_RATE_LIMIT_MAX": "50",
            }
        )
        redis = create_redis(settings.redis_url_value())
        app = create_app(settings, redis=redis)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(redis.aclose)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            )
            engine = create_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            await installation_store(engine, CLIENT_ID, TokenCipher([KEY])).async_save(
                Installation(
                    app_id="A0APP1",
                    enterprise_id=None,
                    team_id=TEAM,
                    user_id=USER,
                    bot_token=BOT_TOKEN,
                    bot_id="B0BOT1",
                    bot_user_id="U0FAKEBOT",
                    user_token=slack.ui.user_token(USER),
                )
            )
            worker = await build_ai_worker(settings, redis, stack)
            await stack.enter_async_context(running(worker))
            claude.script(*[Behaviour(delay_s=MODEL_DELAY_S) for _ in range(clicks + 1)])
            print(f"fake model delay {MODEL_DELAY_S * 1000:.0f} ms, subtracted from refine and regenerate")
            await post_signed(client, shortcut_body(slack))

            async def carded() -> bool:
                return bool(slack.response_posts.get("shortcut1"))

            await wait_until(carded, timeout_s=30)
            [post] = slack.response_posts["shortcut1"]
            [actions] = [b for b in post["blocks"] if b["type"] == "actions"]
            suggestion_id = actions["elements"][0]["value"]
            figures: dict[str, list[float]] = {
                "refine (modal submit -> card)": [],
                "regenerate (click -> card)": [],
                "send as me (click -> 'Sent' card)": [],
            }
            for i in range(clicks):
                delay_s = MODEL_DELAY_S
                # The draft back to unsent, so every click finds it usable (a sent draft refuses Refine).
                async with engine.begin() as conn:
                    await conn.execute(suggestions_table.update().values(sent_at=None, sent_ts=None))
                if i % 3 == 2:
                    the_click = click(slack, card.SEND, suggestion_id)
                    body = the_click.body
                    key = "send as me (click -> 'Sent' card)"
                    delay_s = 0.0
                elif i % 3 == 0:
                    the_click = click(slack, card.REFINE, suggestion_id)
                    await post_signed(client, the_click.body)
                    body = submit(slack, slack.ui.opened[-1], refine_values(preset="shorter"))
                    key = "refine (modal submit -> card)"
                else:
                    the_click = click(slack, card.REGENERATE, suggestion_id)
                    body = the_click.body
                    key = "regenerate (click -> card)"
                sent = time.monotonic()
                await post_signed(client, body)

                async def changed(response_id: str = the_click.response_id) -> bool:
                    return bool(slack.ui.card_changed_s.get(response_id))

                await wait_until(changed, timeout_s=30, every_s=0.005)
                figures[key].append(slack.ui.card_changed_s[the_click.response_id][0] - sent - delay_s)
        for name, values in figures.items():
            ms = [v * 1000 for v in values]
            print(
                f"{name}: n={len(ms)} p50={percentile(ms, 0.5):.1f} ms p99={percentile(ms, 0.99):.1f} ms "
                f"mean={statistics.mean(ms):.1f} ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=60)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with capture_logs():  # the figures only, not the app's log lines
        asyncio.run(main(args.clicks, args.redis_url))
