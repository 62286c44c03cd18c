"""What the admin dashboard shows, read from a queue: counts, per-minute charts, workers, limits and groups.

Only ids, groups, states, timings and reasons are read out; job data, results and progress never are.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_backend.queue import GroupInfo, JobState, Queue, RateLimit

CHART_MINUTES = 15
MINUTE_MS = 60_000
# The first read of the event stream; it grows fourfold while the oldest entry read is still inside the window.
FIRST_EVENTS_READ = 500


@dataclass(frozen=True)
class MinuteBucket:
    """One minute of the charts: finished jobs and wait-time percentiles (ms; None when nothing completed)."""

    start_ms: int
    label: str
    completed: int
    failed: int
    wait_p50_ms: int | None
    wait_p95_ms: int | None


@dataclass(frozen=True)
class WorkerRow:
    """A worker's last heartbeat: how long ago, and its load."""

    worker_id: str
    host: str
    pid: int | None
    running: int
    concurrency: int
    age_ms: int
    live: bool


@dataclass(frozen=True)
class RateLimitView:
    """The queue's rate limit now: the limit, starts in the current window, the upstream hold, paused or not."""

    rate: RateLimit | None
    starts_in_window: int
    hold_remaining_ms: int
    paused: bool


@dataclass(frozen=True)
class BudgetView:
    """The token budget now: tokens started in its window, and the limit (None: no budget)."""

    used_tokens: int
    limit_tokens: int | None
    window_ms: int | None


UsageLookup = Callable[[Sequence[str]], Awaitable[dict[str, tuple[int, int]]]]
"""Workspaces -> (daily token quota (0: none), tokens used today)."""


@dataclass(frozen=True)
class Overview:
    """Everything the dashboard's front page shows."""

    queue_name: str
    now_ms: int
    counts: dict[str, int]
    minutes: list[MinuteBucket]
    workers: list[WorkerRow]
    rate_limit: RateLimitView
    groups: list[GroupInfo]
    budget: BudgetView
    usage: dict[str, tuple[int, int]]

    def chart_data(self) -> dict[str, list[Any]]:
        """The charts' series, for the page's script."""
        return {
            "labels": [m.label for m in self.minutes],
            "completed": [m.completed for m in self.minutes],
            "failed": [m.failed for m in self.minutes],
            "p50": [m.wait_p50_ms for m in self.minutes],
            "p95": [m.wait_p95_ms for m in self.minutes],
        }


async def read_overview(
    queue: Queue, *, stale_after_ms: int, now_ms: int | None = None, usage: UsageLookup | None = None
) -> Overview:
    """Read the front page's numbers from Redis (a handful of reads, run together), and quota use if given."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    counts, events, beats, rate, groups = await asyncio.gather(
        queue.counts(),
        recent_events(queue, since_ms=now - CHART_MINUTES * MINUTE_MS),
        queue.workers(),
        rate_limit_view(queue, now),
        queue.groups(limit=10),
    )
    limits, budget_used = await asyncio.gather(queue.limits(), queue.budget_used())
    budget = limits.budget
    budget_view = BudgetView(budget_used, budget.tokens if budget else None, budget.window_ms if budget else None)
    quota_use = await usage([g.group for g in groups if g.group]) if usage is not None else {}
    return Overview(
        queue_name=queue.name,
        now_ms=now,
        counts={state.value: counts[state] for state in JobState},
        minutes=minute_series(events, now),
        workers=worker_rows(beats, now, stale_after_ms),
        rate_limit=rate,
        groups=groups,
        budget=budget_view,
        usage=quota_use,
    )


async def recent_events(queue: Queue, *, since_ms: int) -> list[dict[str, str]]:
    """Stream entries newer than `since_ms`, newest first, reading more of the stream only while needed."""
    count = FIRST_EVENTS_READ
    while True:
        events = await queue.events(count)
        exhausted = len(events) < count or count >= queue.max_events
        if exhausted or event_ms(events[-1]["id"]) < since_ms:
            return [e for e in events if event_ms(e["id"]) >= since_ms]
        count = min(count * 4, queue.max_events)


async def rate_limit_view(queue: Queue, now_ms: int) -> RateLimitView:
    """The configured limit, and how many starts the current sliding window already holds."""
    limits, hold_ms, paused = await asyncio.gather(queue.limits(), queue.hold_remaining_ms(), queue.is_paused())
    starts = 0
    if limits.rate is not None:
        # The limiter list holds the last `max` start times (ms), newest first: the exact sliding window.
        raw = await queue.redis.lrange(queue.keys.key("limiter"), 0, -1)
        since = now_ms - limits.rate.duration_ms
        starts = sum(1 for value in raw if _int(value) > since)
    return RateLimitView(limits.rate, starts, hold_ms, paused)


def minute_series(events: Sequence[dict[str, str]], now_ms: int, minutes: int = CHART_MINUTES) -> list[MinuteBucket]:
    """Completed and failed jobs, and completed jobs' wait p50/p95, per minute; the last bucket is this minute."""
    end = (now_ms // MINUTE_MS + 1) * MINUTE_MS
    start = end - minutes * MINUTE_MS
    completed = [0] * minutes
    failed = [0] * minutes
    waits: list[list[int]] = [[] for _ in range(minutes)]
    for entry in events:
        at = event_ms(entry["id"])
        if not start <= at < end:
            continue
        i = (at - start) // MINUTE_MS
        kind = entry.get("event")
        if kind == "completed":
            finished, entry_waits = completed_jobs(entry)
            completed[i] += finished
            waits[i].extend(entry_waits)
        elif kind == "failed":
            failed[i] += 1
    return [
        MinuteBucket(
            start_ms=start + i * MINUTE_MS,
            label=datetime.fromtimestamp((start + i * MINUTE_MS) / 1000, UTC).strftime("%H:%M"),
            completed=completed[i],
            failed=failed[i],
            wait_p50_ms=percentile(waits[i], 50),
            wait_p95_ms=percentile(waits[i], 95),
        )
        for i in range(minutes)
    ]


def completed_jobs(entry: dict[str, str]) -> tuple[int, list[int]]:
    """How many jobs a `completed` entry reports, and their waits (ms).

    The engine writes one entry per batch of completions, its fields JSON arrays in job order; a plain
    number (one job per entry) is read too.
    """
    try:
        ids = json.loads(entry.get("job_ids", "[]"))
        waits = json.loads(entry.get("wait_ms", "[]"))
    except ValueError:
        return 1, []
    if not isinstance(waits, list):
        waits = [waits]
    count = len(ids) if isinstance(ids, list) and ids else max(1, len(waits))
    return count, [max(0, int(w)) for w in waits if isinstance(w, int | float)]


def percentile(values: Sequence[int], q: float) -> int | None:
    """The nearest-rank percentile (q in 0..100), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def worker_rows(beats: dict[str, dict[str, Any]], now_ms: int, stale_after_ms: int) -> list[WorkerRow]:
    """Workers by heartbeat, freshest first; `live` when the last beat is within `stale_after_ms`."""
    rows = []
    for worker_id, beat in beats.items():
        age = max(0, now_ms - _int(beat.get("last_seen_ms")))
        pid = beat.get("pid")
        rows.append(
            WorkerRow(
                worker_id=worker_id,
                host=str(beat.get("host", "")),
                pid=pid if isinstance(pid, int) else None,
                running=_int(beat.get("running")),
                concurrency=_int(beat.get("concurrency")),
                age_ms=age,
                live=age <= stale_after_ms,
            )
        )
    rows.sort(key=lambda r: (r.age_ms, r.worker_id))
    return rows


def event_ms(stream_id: str) -> int:
    """The time (ms) in a stream entry id such as `1712345678901-0`."""
    return _int(stream_id.partition("-")[0])


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
