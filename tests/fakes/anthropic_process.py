"""The fake model in a process of its own: `python -m tests.fakes.anthropic_process API_KEY DIR`.

A rate measured at the API must not hang on the test's own event loop. In the test's process a pause of that loop
(294 ms was seen in a full suite run in CI) stamps calls that arrived apart as arriving together, and the first
window's burst then seems to crowd the next window. Here the stamps are this process's: it answers every message
with the default draft, writes its base URL to DIR/url once it listens, and on SIGTERM writes the arrival time of
each message request (`time.monotonic()`, the system's clock, comparable across processes) to DIR/received.json.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from tests.fakes.anthropic_server import FakeAnthropic


async def _serve(api_key: str, out: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with FakeAnthropic(api_key=api_key) as fake:
        (out / "url.tmp").write_text(fake.base_url)
        (out / "url.tmp").rename(out / "url")  # whole, or not there yet
        await stop.wait()
        received = [r.received_s for r in fake.message_requests]
    (out / "received.json").write_text(json.dumps(received))


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], Path(sys.argv[2])))
