"""Run workers until SIGTERM/SIGINT: stop fetching, finish or release running jobs, then return.

A second signal exits the process at once; its leased jobs are then recovered by the stall check.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence

import structlog

from slack_backend.queue.worker import Worker

log = structlog.get_logger("slack_backend.queue.runner")

EXIT_ON_SECOND_SIGNAL = 130


async def run_until_signalled(workers: Sequence[Worker], *, shutdown_timeout_s: float | None) -> None:
    """Run the workers; on the first signal close them with the timeout; on the second, exit now."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    seen: list[int] = []

    def on_signal(signum: int) -> None:
        seen.append(signum)
        if len(seen) == 1:
            log.info("shutdown requested", signal=signal.Signals(signum).name, timeout_s=shutdown_timeout_s)
            stop.set()
        else:
            log.warning("second signal: exiting now; running jobs will be recovered as stalled")
            os._exit(EXIT_ON_SECOND_SIGNAL)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    runs = [asyncio.create_task(w.run(), name=f"worker {w.id}") for w in workers]
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(w.close(shutdown_timeout_s) for w in workers))
        await asyncio.gather(*runs)
    finally:
        stopper.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
