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


def versions(*dists: str) -> Callable[[], str]:
    """A version() for Driver: the installed versions of the given distributions."""
    return lambda: " ".join(f"{d} {version(d)}" for d in dists)


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
