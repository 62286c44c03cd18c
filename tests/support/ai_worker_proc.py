"""An ai-responses worker process for fault tests: `python -m tests.support.ai_worker_proc '<json config>'`.

Config: `env` (the service's variables, as `load_settings` reads them; AI_TIMEOUT_S sets the Claude client's
timeout), `starts_key` (a Redis list that gets the `processed_ms` of every job start, so a test sees starts across
processes). SIGTERM shuts it down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from slack_backend.config import load_settings
from slack_backend.jobs.workers import build_ai_worker
from slack_backend.logging import configure_logging
from slack_backend.queue import JobEvent, create_redis
from slack_backend.queue.runner import run_until_signalled


async def main(cfg: dict[str, Any]) -> None:
    settings = load_settings(cfg["env"])
    redis = create_redis(settings.redis_url_value())
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        worker = await build_ai_worker(settings, redis, stack)
        starts_key = cfg.get("starts_key")
        if starts_key:

            async def record_start(event: JobEvent) -> None:
                if event.job is not None and event.job.processed_ms is not None:
                    await redis.rpush(starts_key, event.job.processed_ms)

            worker.on("active", record_start)
        await run_until_signalled([worker], shutdown_timeout_s=settings.shutdown_timeout_s)


if __name__ == "__main__":
    configure_logging("INFO", "json")
    asyncio.run(main(json.loads(sys.argv[1])))
