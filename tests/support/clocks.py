"""Clocks a test moves by hand, so durations and expiries are exact: a monotonic one in seconds, a wall one in
datetimes."""

from __future__ import annotations

from datetime import datetime, timedelta


class MonotonicClock:
    """Stands in for `time.monotonic`: seconds, from 1000.0 until the test moves `now_s`."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class WallClock:
    """Stands in for a `datetime` clock: `now` until the test moves it, or `advance`s it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)
