"""Parse the Anthropic API's rate-limit response headers into a snapshot that says when to hold new starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# The limit families the API reports, each as `anthropic-ratelimit-<family>-{limit,remaining,reset}`.
_FAMILIES = ("requests", "tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class LimitWindow:
    """One rate-limit family as last reported: its size, what is left, and when it refills (UTC)."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: datetime | None = None

    @property
    def exhausted(self) -> bool:
        """True when the provider says nothing of this family is left until `reset_at`."""
        return self.remaining is not None and self.remaining <= 0


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """The rate-limit state of one response: the four limit families plus any `retry-after`."""

    requests: LimitWindow = field(default_factory=LimitWindow)
    tokens: LimitWindow = field(default_factory=LimitWindow)
    input_tokens: LimitWindow = field(default_factory=LimitWindow)
    output_tokens: LimitWindow = field(default_factory=LimitWindow)
    retry_after_s: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, now: datetime | None = None) -> RateLimitSnapshot:
        """Build a snapshot from response headers (any case); absent or malformed values become None.

        Args:
            headers: the HTTP response headers.
            now: the clock used to turn an HTTP-date `retry-after` into seconds (default: now, UTC).
        """
        lowered = {key.lower(): value for key, value in headers.items()}
        windows = {family: _window(lowered, family) for family in _FAMILIES}
        return cls(
            requests=windows["requests"],
            tokens=windows["tokens"],
            input_tokens=windows["input-tokens"],
            output_tokens=windows["output-tokens"],
            retry_after_s=_retry_after_s(lowered, now or datetime.now(UTC)),
        )

    @property
    def windows(self) -> tuple[LimitWindow, ...]:
        """The four limit families, in header order."""
        return (self.requests, self.tokens, self.input_tokens, self.output_tokens)

    @property
    def is_empty(self) -> bool:
        """True when the response carried none of the rate-limit headers."""
        return self.retry_after_s is None and all(window == LimitWindow() for window in self.windows)

    def hold_until_s(self, now: datetime) -> float | None:
        """Seconds to hold every new start because some family has nothing left, or None if none is exhausted.

        When several families are exhausted the latest reset wins: a start before it would be refused anyway.
        An exhausted family without a reset time falls back to `retry-after`; if neither is known, None.
        """
        exhausted = [window for window in self.windows if window.exhausted]
        if not exhausted:
            return None
        resets = [window.reset_at for window in exhausted if window.reset_at is not None]
        if resets:
            return max(0.0, max((reset - _aware(now)).total_seconds() for reset in resets))
        return self.retry_after_s


def _window(headers: Mapping[str, str], family: str) -> LimitWindow:
    prefix = f"anthropic-ratelimit-{family}-"
    return LimitWindow(
        limit=_int(headers.get(prefix + "limit")),
        remaining=_int(headers.get(prefix + "remaining")),
        reset_at=_rfc3339(headers.get(prefix + "reset")),
    )


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _rfc3339(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        # Python 3.11's fromisoformat reads RFC 3339, including the "Z" suffix and fractional seconds.
        return _aware(datetime.fromisoformat(value.strip()))
    except ValueError:
        return None


def _retry_after_s(headers: Mapping[str, str], now: datetime) -> float | None:
    # retry-after-ms is the more precise of the two when the API sends both, as the SDK itself prefers it.
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (_aware(when) - _aware(now)).total_seconds())


def _aware(moment: datetime) -> datetime:
    # A naive time from a header or a caller is taken as UTC, so comparisons never raise.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
