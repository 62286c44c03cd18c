"""Helpers for peer drivers: import a peer package by name, and the `asyncio.gather`-style fast enqueue."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from types import ModuleType
from typing import Any

# Peers without a bulk API are driven like the research anchors: 100 enqueues in flight at a time.
IN_FLIGHT = 100


def load(module: str) -> ModuleType:
    """Import a peer's module by name: peers live only in bench/.venv-peers, which mypy does not see."""
    return importlib.import_module(module)


def reply_parser() -> str:
    """Which reply parser redis-py uses in this process: hiredis (with its version) or the pure-Python one."""
    from redis.utils import HIREDIS_AVAILABLE

    return f"hiredis {version('hiredis')}" if HIREDIS_AVAILABLE else "pure-Python parser"


def versions(*dists: str) -> Callable[[], str]:
    """A version() for Driver: the installed versions of the given distributions and redis-py's reply parser."""
    return lambda: " ".join(f"{d} {version(d)}" for d in dists) + f", {reply_parser()}"


async def in_flight(datas: list[dict[str, Any]], one: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
    """Enqueue every item with `one`, IN_FLIGHT at a time."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def send(data: dict[str, Any]) -> None:
        async with gate:
            await one(data)

    await asyncio.gather(*(send(d) for d in datas))


async def forever() -> None:
    """For workers that run on their own tasks or threads: park until the process ends."""
    await asyncio.Event().wait()
