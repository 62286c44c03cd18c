"""The Redis keys of one queue: all under one hash tag, in the order every Lua script receives them."""

from __future__ import annotations

from dataclasses import dataclass

# The order Lua scripts bind their KEYS in; the loader builds the `k` table from this tuple.
KEY_NAMES: tuple[str, ...] = (
    "wait",
    "delayed",
    "active",
    "completed",
    "failed",
    "jobs",
    "data",
    "meta",
    "groups",
    "groups_limited",
    "group_waiting",
    "group_active",
    "group_conf",
    "group_limiter",
    "limiter",
    "events",
    "wake",
    "workers",
    "budget",
    "budget_cost",
    "dedup",
    "fetches",
    "group_pass",
)


@dataclass(frozen=True)
class QueueKeys:
    """Names of a queue's keys: `{prefix:name}:wait` and so on; the braces keep them in one Cluster slot."""

    prefix: str
    name: str

    def __post_init__(self) -> None:
        for label, value in (("prefix", self.prefix), ("queue name", self.name)):
            if not value or any(c in value for c in "{}\0") or value != value.strip():
                raise ValueError(f"{label} {value!r} must be non-empty, without braces, NUL or edge spaces")

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.name}}}"

    def key(self, name: str) -> str:
        if name not in KEY_NAMES:
            raise KeyError(name)
        return f"{self.tag}:{name}"

    def worker_wake(self, worker_id: str) -> str:
        """A worker's own wake list: only it blocks there, so a push ends exactly its wait (same hash tag)."""
        return f"{self.tag}:wake:{worker_id}"

    def calls(self) -> str:
        """The stamps of the queue's call gate (RateGate): the last acquisitions of upstream calls (same hash tag)."""
        return f"{self.tag}:calls"

    def all(self) -> list[str]:
        """Every key, in script order."""
        return [self.key(n) for n in KEY_NAMES]
