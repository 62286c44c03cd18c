"""Small statistics helpers shared by the drivers and the report: percentiles, summaries, sliding windows."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (pct in 0..100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a figure across rounds (NaN-free input expected)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"median": float(median), "min": float(ordered[0]), "max": float(ordered[-1]), "n": len(ordered)}


def max_in_window(times_s: Sequence[float], window_s: float) -> int:
    """The largest number of events inside any half-open window [t, t + window_s) over sorted or unsorted times."""
    ordered = sorted(times_s)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def per_second(times_s: Sequence[float]) -> list[int]:
    """Counts of events in consecutive whole seconds from the first event."""
    if not times_s:
        return []
    first = min(times_s)
    counts = [0] * (int(max(times_s) - first) + 1)
    for t in times_s:
        counts[int(t - first)] += 1
    return counts


def latency_summary(latencies_s: Sequence[float], starts_s: Sequence[float] | None = None) -> dict[str, float]:
    """p50/p99/max in milliseconds; with `starts_s`, also p99 of the jobs started after the first second."""
    out = {
        "n": float(len(latencies_s)),
        "p50_ms": percentile(latencies_s, 50) * 1000,
        "p99_ms": percentile(latencies_s, 99) * 1000,
        "max_ms": (max(latencies_s) * 1000) if latencies_s else math.nan,
    }
    if starts_s is not None and starts_s:
        first = min(starts_s)
        later = [lat for lat, t in zip(latencies_s, starts_s, strict=True) if t - first >= 1.0]
        out["p99_after_1s_ms"] = percentile(later, 99) * 1000
    return out
