"""Job events: the names, the payload handed to hooks, and hooks that may fail without harming anything."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from slack_backend.queue.job import Job


def _log() -> Any:
    """The module's logger, loaded at the first line logged: the command line's queue commands import this module
    and log nothing, so they need not pay for structlog."""
    import structlog

    return structlog.get_logger("slack_backend.queue.events")


EventName = Literal["active", "completed", "failed", "retrying", "released", "stalled", "progress", "error"]
EVENT_NAMES: tuple[EventName, ...] = (
    "active",
    "completed",
    "failed",
    "retrying",
    "released",
    "stalled",
    "progress",
    "error",
)
DEFAULT_MAX_EVENTS = 10_000


@dataclass(frozen=True)
class JobEvent:
    """What happened. `job` is None for worker-level errors (a Redis outage, say)."""

    name: EventName
    job: Job | None = None
    result: Any = None
    error: BaseException | None = None
    final: bool = False
    delay_ms: int | None = None
    progress: Any = None
    job_id: str | None = None


Hook = Callable[[JobEvent], Awaitable[None] | None]


class Hooks:
    """In-process listeners; a listener that raises is logged and changes no job state."""

    def __init__(self) -> None:
        self._hooks: dict[EventName, list[Hook]] = defaultdict(list)

    def on(self, name: EventName, hook: Hook) -> None:
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event {name!r}; one of {', '.join(EVENT_NAMES)}")
        self._hooks[name].append(hook)

    def off(self, name: EventName, hook: Hook) -> None:
        self._hooks[name].remove(hook)

    def __contains__(self, name: str) -> bool:
        """Whether anything listens to `name`: a hot path builds no event nobody would see."""
        return bool(self._hooks.get(name))  # type: ignore[call-overload]

    async def emit(self, event: JobEvent) -> None:
        for hook in list(self._hooks.get(event.name, ())):
            try:
                outcome = hook(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                job_id = event.job.id if event.job else event.job_id
                _log().error(
                    "event hook raised",
                    job_event=event.name,
                    hook=getattr(hook, "__qualname__", repr(hook)),
                    job_id=job_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
