"""Work a job runs while its model call is in flight: begun once the call has its rate-limit slot and is going out.

The audit's start row is a record, not a condition of the call. Written before the call, it sat on the path a user
waits on (about 0.7 ms of a draft's 10 in `bench.overhead`); begun as the request goes out, it runs while the model
thinks. `WhileCalling.written()` is awaited before anything that needs the row (a finish, a failure) and at the
job's end whatever happened, so the row is always there before it is finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

TakeSlot = Callable[[], Awaitable[object]]
"""The model call's rate-limit slot, awaited right before its request goes out (ai.client.BeforeCall)."""

# What the current job's model call begins once it holds its slot; set only around that call (`WhileCalling.call`).
_ON_SLOT: ContextVar[Callable[[], None] | None] = ContextVar("slack_backend_on_slot", default=None)


def then_begin_pending(take_slot: TakeSlot) -> TakeSlot:
    """`take_slot` (the model's rate-limit slot), then begin what the calling job left to run during the call."""

    async def take_slot_then_begin() -> object:
        granted = await take_slot()
        begin = _ON_SLOT.get()
        if begin is not None:
            begin()
        return granted

    return take_slot_then_begin


class WhileCalling:
    """One write (`write()`) run at most once: during the model call when one goes out, else when asked for."""

    def __init__(self, write: Callable[[], Awaitable[None]]) -> None:
        self._write = write
        self._begun: asyncio.Handle | None = None
        self._task: asyncio.Future[None] | None = None
        self._written = False

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around the model call: the write begins once its request is on its way."""
        reset = _ON_SLOT.set(self._begin)
        try:
            yield
        finally:
            _ON_SLOT.reset(reset)

    def _begin(self) -> None:
        # One loop turn later, not now: on Python 3.11 aiohttp writes the request (headers and body together) in a
        # task it makes just after the slot is taken, and a task made here would run first, holding the request
        # back by the whole write (measured: slot to the model's receipt 0.56 ms before, 0.97 ms with it).
        if self._begun is None and not self._written:
            self._begun = asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        if self._task is None and not self._written:
            self._task = asyncio.ensure_future(self._write())

    async def written(self) -> None:
        """Return once the write is done: waits for the one begun during the call, or writes now."""
        if self._written:
            return
        self._written = True
        if self._begun is not None:
            self._begun.cancel()
        if self._task is None:
            await self._write()
        else:
            # Shielded: a job cancelled here (shutdown) still leaves its row whole.
            await asyncio.shield(self._task)
        # Let go of the write (which holds the job and its data) and its task. The task was made in the call's
        # context, which holds this object's `_begin`: kept, the two would be a reference cycle that only the
        # garbage collector frees. And tasks the model client started during the call (a kept-alive connection's)
        # hold that context for as long as they live: through it, this object, but no longer the job.
        self._write, self._task, self._begun = _written_already, None, None


async def _written_already() -> None:
    """What a WhileCalling writes once its write is done: nothing."""
