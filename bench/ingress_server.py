"""The real web app under uvicorn for the ingress benchmark: `python -m bench.ingress_server '<json>'`.

Configured the way `slack-backend serve` runs it (INFO JSON logs, one process, uvicorn's defaults), minus Slack
credentials other than the signing secret, so no request ever leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

import uvicorn

from slack_backend.config import load_settings
from slack_backend.logging import configure_logging
from slack_backend.web import create_app

READY = "BENCH-READY"


async def serve(cfg: dict[str, Any], log_stream: TextIO) -> None:
    settings = load_settings(
        {
            "REDIS_URL": cfg["redis_url"],
            "REDIS_PREFIX": cfg["prefix"],
            "SLACK_SIGNING_SECRET": cfg["secret"],
            "DATABASE_URL": cfg["database_url"],
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
        }
    )
    configure_logging(settings.log_level, settings.log_format, stream=log_stream)
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=int(cfg["port"]),
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn offers no event to await
        await asyncio.sleep(0.02)
    print(READY, flush=True)
    await task


def main() -> None:
    cfg = json.loads(sys.argv[1])
    with open(cfg["log_path"], "a") as log_stream:
        asyncio.run(serve(cfg, log_stream))


if __name__ == "__main__":
    main()
