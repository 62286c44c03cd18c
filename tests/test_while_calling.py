"""WhileCalling on its own: work begins once the model call holds its slot, in the order it was entered, and gives
its outcome once; work not wanted never begins, or finishes unobserved without an unretrieved error."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from slack_backend.jobs.while_calling import WhileCalling, then_begin_pending


async def test_work_entered_around_a_call_begins_after_the_slot_in_order_and_gives_its_outcome() -> None:
    events: list[str] = []

    async def slot() -> bool:
        events.append("slot")
        return True

    def work(name: str, outcome: int) -> WhileCalling[int]:
        async def run() -> int:
            events.append(name)
            return outcome

        return WhileCalling(run)

    take_slot = then_begin_pending(slot)
    first, second = work("first", 1), work("second", 2)
    with first.call(), second.call():
        await take_slot()
        assert events == ["slot"], "begun one loop turn after the slot, not inside it"
        await asyncio.sleep(0.01)
    assert events == ["slot", "first", "second"]
    assert (await first.done(), await second.done()) == (1, 2)
    assert await first.done() == 1, "a later call gives the same outcome without running the work again"
    assert events == ["slot", "first", "second"]


async def test_work_with_no_call_runs_when_its_outcome_is_asked_for() -> None:
    runs: list[int] = []

    async def run() -> str:
        runs.append(1)
        return "read now"

    pending = WhileCalling(run)
    await then_begin_pending(_granted)()  # a call outside `pending.call()` begins nothing of it
    await asyncio.sleep(0.01)
    assert runs == []
    assert await pending.done() == "read now"
    assert runs == [1]


async def test_dropped_work_never_begins_or_finishes_unobserved() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    runs: list[str] = []

    async def failing() -> None:
        runs.append("failing")
        raise ConnectionError("Redis went away during the call")

    async def never() -> None:
        runs.append("never")

    begun, not_begun = WhileCalling(failing), WhileCalling(never)
    take_slot = then_begin_pending(_granted)
    with begun.call():
        await take_slot()
        await asyncio.sleep(0.01)
    not_begun.drop()
    with not_begun.call():
        await take_slot()
    begun.drop()
    await asyncio.sleep(0.01)
    gc.collect()  # an unretrieved task error is reported when the task is freed
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert runs == ["failing"]
    assert unretrieved == []


async def test_a_dropped_work_that_was_awaited_already_keeps_its_outcome() -> None:
    async def run() -> int:
        return 7

    pending = WhileCalling(run)
    assert await pending.done() == 7
    pending.drop()
    assert await pending.done() == 7


async def _granted() -> bool:
    return True
