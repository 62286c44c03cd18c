"""Measures the tests assert on: the most events in any sliding window, and Jain's fairness index."""

from __future__ import annotations

from collections.abc import Sequence


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
