"""Work a job runs while its model call is in flight: begun once the call has its rate-limit slot and is going out.

The audit's start row is a record, not a condition of the call. Written before the call, it sat on the path a user
waits on (about 0.7 ms of a draft's 10 in `bench.overhead`); begun as the request goes out, it runs while the model
thinks. The same holds for reading the delivery ledger before a new draft is posted: a round trip to Redis that the
model's seconds hide. `WhileCalling.done()` is awaited before anything that needs the work's outcome (a finish, a
failure, the post) and, for the audit, at the job's end whatever happened, so the row is always there before it is
finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

T = TypeVar("T")

TakeSlot = Callable[[], Awaitable[object]]
"""The model call's rate-limit slot, awaited right before its request goes out (ai.client.BeforeCall)."""

# What the current job's model call begins once it holds its slot, in the order the work was entered; set only
# around that call (`WhileCalling.call`).
_ON_SLOT: ContextVar[tuple[Callable[[], None], ...]] = ContextVar("slack_backend_on_slot", default=())


def then_begin_pending(take_slot: TakeSlot) -> TakeSlot:
    """`take_slot` (the model's rate-limit slot), then begin what the calling job left to run during the call."""

    async def take_slot_then_begin() -> object:
        granted = await take_slot()
        for begin in _ON_SLOT.get():
            begin()
        return granted

    return take_slot_then_begin


class WhileCalling(Generic[T]):
    """One piece of work (`work()`) run at most once: during the model call when one goes out, else when asked for."""

    def __init__(self, work: Callable[[], Awaitable[T]]) -> None:
        self._work: Callable[[], Awaitable[Any]] | None = work
        self._begun: asyncio.Handle | None = None
        self._task: asyncio.Future[T] | None = None
        self._claimed = False
        self._outcome: T | None = None

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around the model call: the work begins once its request is on its way (after work entered before)."""
        reset = _ON_SLOT.set((*_ON_SLOT.get(), self._begin))
        try:
            yield
        finally:
            _ON_SLOT.reset(reset)

    def _begin(self) -> None:
        # One loop turn later, not now: on Python 3.11 aiohttp writes the request (headers and body together) in a
        # task it makes just after the slot is taken, and a task made here would run first, holding the request
        # back by the whole write (measured: slot to the model's receipt 0.56 ms before, 0.97 ms with it).
        if self._begun is None and not self._claimed:
            self._begun = asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        if self._task is None and not self._claimed and self._work is not None:
            self._task = asyncio.ensure_future(self._work())

    async def done(self) -> T:
        """The work's outcome: waits for the run begun during the call, or runs the work now.

        The work runs once: a later call returns what the first one got (None if it raised or still waits); the
        jobs await it in sequence, never side by side."""
        if self._claimed:
            return self._outcome  # type: ignore[return-value]  # None only as said above
        self._claimed = True
        work, task = self._work, self._task
        self._let_go()
        if task is None:
            assert work is not None
            self._outcome = await work()
        else:
            # Shielded: a job cancelled here (shutdown) still leaves its row whole.
            self._outcome = await asyncio.shield(task)
        return self._outcome

    def drop(self) -> None:
        """Not wanted after all (the job ended another way): a run not begun never begins; one begun finishes
        unobserved. Nothing once `done()` was awaited."""
        if self._claimed:
            return
        self._claimed = True
        if self._task is not None:
            self._task.add_done_callback(_observed)
        self._let_go()

    def _let_go(self) -> None:
        # Let go of the work (which holds the job and its data) and its task. The task was made in the call's
        # context, which holds this object's `_begin`: kept, the two would be a reference cycle that only the
        # garbage collector frees. And tasks the model client started during the call (a kept-alive connection's)
        # hold that context for as long as they live: through it, this object, but no longer the job.
        if self._begun is not None:
            self._begun.cancel()
        self._work, self._task, self._begun = None, None, None


def _observed(task: asyncio.Future[Any]) -> None:
    """Retrieve a dropped run's outcome, so an error in it is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()
