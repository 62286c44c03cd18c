"""Self-fencing: a run whose lease this worker could not renew in time is stopped before another may take it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class LeaseFence:
    """Knows until when each of a worker's runs surely holds its lease, and calls `expired(token)` once it may not.

    A lease granted or renewed by a call sent at `t` lasts at least until `t + lease` on this host's monotonic clock:
    Redis stamped the deadline when it ran the call, which was later. So a run stopped at that moment is stopped
    before the stall check of any other worker can hand its job out again: a partitioned worker never runs a job
    beside its new owner. One timer serves every run (set for the earliest deadline), not one per job.
    """

    def __init__(self, lease_s: float, expired: Callable[[str], None]) -> None:
        self._lease_s = lease_s
        self._expired = expired
        self._until: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def granted(self, token: str, since: float) -> None:
        """A run started under a lease granted at `since` (monotonic; its reply's arrival when the send is unknown)."""
        self._until[token] = since + self._lease_s
        if self._timer is None:
            self._arm()

    def renewed(self, tokens: Iterable[str], sent_at: float) -> None:
        """These runs' leases were extended by a call sent at `sent_at`."""
        until = sent_at + self._lease_s
        for token in tokens:
            if token in self._until:
                self._until[token] = until
        self._arm()

    def drop(self, token: str) -> None:
        """The run is over; its lease is no longer this worker's concern."""
        self._until.pop(token, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._until.clear()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._until:
            self._timer = asyncio.get_running_loop().call_at(min(self._until.values()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        for token in [t for t, until in self._until.items() if until <= now]:
            del self._until[token]
            self._expired(token)
        self._arm()
