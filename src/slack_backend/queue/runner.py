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
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignals:
    """The first SIGTERM/SIGINT sets `requested`; the second ends the process on the spot."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self._seen = 0

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self, signum: int) -> None:
        self._seen += 1
        if self._seen == 1:
            log.info("shutdown requested", signal=signal.Signals(signum).name)
            self.requested.set()
        else:
            log.warning("second signal: exiting now; running jobs will be recovered as stalled")
            os._exit(EXIT_ON_SECOND_SIGNAL)


async def run_until_signalled(workers: Sequence[Worker], *, shutdown_timeout_s: float | None) -> None:
    """Run the workers; on the first signal close them with the timeout; on the second, exit now."""
    signals = ShutdownSignals()
    signals.install()
    runs = [asyncio.create_task(w.run(), name=f"worker {w.id}") for w in workers]
    stopper = asyncio.create_task(signals.requested.wait())
    try:
        await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(w.close(shutdown_timeout_s) for w in workers))
        await asyncio.gather(*runs)
    finally:
        stopper.cancel()
        signals.remove()
