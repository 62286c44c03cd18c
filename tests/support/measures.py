"""Measures the tests assert on: the most events in any sliding window, Jain's fairness index, and how late this
process's event loop ran (a fake server in the test's process stamps arrivals on that loop)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence


def max_in_window(times_ms: Sequence[float], window_ms: float) -> int:
    """The largest number of events inside any half-open window [t, t + window_ms)."""
    times = sorted(times_ms)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def jain_index(counts: Sequence[int]) -> float:
    """Jain's fairness index of shares: 1.0 when all are equal, 1/n when one takes everything."""
    total = sum(counts)
    return total * total / (len(counts) * sum(c * c for c in counts)) if total else 1.0


class LoopLag:
    """The most this process's event loop ran late while `watching()`: a fake stamping requests on a loop that
    stalled (a full collection of the suite's heap, a starved CPU) would stamp calls that arrived apart as together."""

    def __init__(self, tick_s: float = 0.01) -> None:
        self.tick_s = tick_s
        self.worst_s = 0.0

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[LoopLag]:
        task = asyncio.create_task(self._tick())
        try:
            yield self
        finally:
            task.cancel()

    async def _tick(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(self.tick_s)
            self.worst_s = max(self.worst_s, time.monotonic() - began - self.tick_s)
