"""The queue's shared limits: global rate and concurrency, and per-group fairness, caps and rates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A start's hand-off from Redis to the processor takes 0.5-3 ms on a 2-core machine (bench/limiter.py measured a
# p50 of 1.4 ms, a max of 3.2 ms); starts let in at the exact window edge can then reach an upstream API closer
# together than the window. 5 ms of guard band absorbs that, at a cost of 0.5% of a 10/s rate.
DEFAULT_RATE_MARGIN_MS = 5


@dataclass(frozen=True)
class RateLimit:
    """At most `max` job starts in any window of `duration_ms`, across every worker (an exact sliding window).

    Each start holds its slot for `duration_ms + margin_ms` by the engine's clock, so that no window of
    `duration_ms` sees more than `max` by the clock of whoever receives the work either, as long as a start reaches
    its processor less than `margin_ms` late (on a loaded machine it can be tens of ms: see docs/architecture.md).
    """

    max: int
    duration_ms: int
    margin_ms: int = DEFAULT_RATE_MARGIN_MS

    def __post_init__(self) -> None:
        if self.max < 1 or self.duration_ms < 1:
            raise ValueError("rate limit max and duration_ms must be >= 1")
        if self.margin_ms < 0:
            raise ValueError("rate limit margin_ms must be >= 0")


@dataclass(frozen=True)
class TokenBudget:
    """At most `tokens` of estimated cost started in any window of `window_ms` (reserved at start, settled at finish).

    A job's `cost` is reserved when it starts and settled to what it really used when it completes; a job released
    by RetryAfter or shutdown gives its reservation back. Estimates should be upper bounds (prompt + max output).
    """

    tokens: int
    window_ms: int

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.window_ms < 1:
            raise ValueError("token budget tokens and window_ms must be >= 1")


@dataclass(frozen=True)
class GroupSettings:
    """One group's own settings: a weight for its share of starts, and optional cap and rate of its own."""

    weight: float = 1.0
    concurrency: int | None = None
    rate: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError("group weight must be > 0")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("group concurrency must be >= 1")

    def to_json(self) -> str:
        out: dict[str, Any] = {"weight": self.weight}
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        if self.rate is not None:
            out["rate_max"] = self.rate.max
            out["rate_duration_ms"] = self.rate.duration_ms
            out["rate_margin_ms"] = self.rate.margin_ms
        return json.dumps(out)


@dataclass(frozen=True)
class QueueLimits:
    """Limits every worker of a queue obeys; stored in the queue's meta so all processes agree.

    `rate`: global start rate. `global_concurrency`: jobs running at once across all workers.
    `group_concurrency` / `group_rate`: the default for each group (a group's own settings override).
    """

    rate: RateLimit | None = None
    global_concurrency: int | None = None
    group_concurrency: int | None = None
    group_rate: RateLimit | None = None
    budget: TokenBudget | None = None

    def to_json(self) -> str:
        out: dict[str, int] = {}
        if self.rate:
            out["rate_max"] = self.rate.max
            out["rate_duration_ms"] = self.rate.duration_ms
            out["rate_margin_ms"] = self.rate.margin_ms
        if self.global_concurrency:
            out["global_concurrency"] = self.global_concurrency
        if self.group_concurrency:
            out["group_concurrency"] = self.group_concurrency
        if self.group_rate:
            out["group_rate_max"] = self.group_rate.max
            out["group_rate_duration_ms"] = self.group_rate.duration_ms
            out["group_rate_margin_ms"] = self.group_rate.margin_ms
        if self.budget:
            out["budget_tokens"] = self.budget.tokens
            out["budget_window_ms"] = self.budget.window_ms
        return json.dumps(out, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> QueueLimits:
        if not raw:
            return cls()
        d: dict[str, Any] = json.loads(raw)
        rate = _rate(d, "rate_")
        group_rate = _rate(d, "group_rate_")
        budget = TokenBudget(int(d["budget_tokens"]), int(d["budget_window_ms"])) if d.get("budget_tokens") else None
        return cls(
            rate=rate,
            global_concurrency=d.get("global_concurrency"),
            group_concurrency=d.get("group_concurrency"),
            group_rate=group_rate,
            budget=budget,
        )


def _rate(d: dict[str, Any], prefix: str) -> RateLimit | None:
    if not d.get(f"{prefix}max"):
        return None
    margin = int(d.get(f"{prefix}margin_ms", DEFAULT_RATE_MARGIN_MS))
    return RateLimit(int(d[f"{prefix}max"]), int(d[f"{prefix}duration_ms"]), margin)
