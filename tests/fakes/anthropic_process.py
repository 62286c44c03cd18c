"""The fake model in a process of its own: `python -m tests.fakes.anthropic_process API_KEY DIR [SCRIPT]`.

A rate measured at the API must not hang on the test's own event loop. In the test's process a pause of that loop
(294 ms was seen in a full suite run in CI) stamps calls that arrived apart as arriving together, and the first
window's burst then seems to crowd the next window. Here the stamps are this process's: it answers each message
with the default draft (or as SCRIPT says), writes its base URL to DIR/url once it listens, and on SIGTERM writes
the arrival time of each message request (`time.monotonic()`, the system's clock, comparable across processes) to
DIR/received.json. SCRIPT, a JSON file of [kind, argument] pairs, gives its answers in order (see SCRIPTED), as
`FakeAnthropic.script` does.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tests.fakes.anthropic_server import Behaviour, FakeAnthropic

# What a script's [kind, argument] pair answers: the argument is 429's Retry-After or a hang's length, in seconds.
SCRIPTED: dict[str, Callable[[float], Behaviour]] = {
    "ok": lambda _: Behaviour.success(),
    "429": lambda retry_after_s: Behaviour.rate_limited(retry_after_s=retry_after_s),
    "529": lambda _: Behaviour.overloaded(),
    "500": lambda _: Behaviour.server_error(),
    "hang": lambda delay_s: Behaviour.hang(delay_s=delay_s),
}


async def _serve(api_key: str, out: Path, script: list[Behaviour]) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with FakeAnthropic(api_key=api_key) as fake:
        fake.script(*script)
        (out / "url.tmp").write_text(fake.base_url)
        (out / "url.tmp").rename(out / "url")  # whole, or not there yet
        await stop.wait()
        received = [r.received_s for r in fake.message_requests]
    (out / "received.json").write_text(json.dumps(received))


if __name__ == "__main__":
    pairs = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else []
    asyncio.run(_serve(sys.argv[1], Path(sys.argv[2]), [SCRIPTED[kind](float(arg)) for kind, arg in pairs]))
