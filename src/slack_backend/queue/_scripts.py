"""Loads the Lua scripts once (with their shared include) and is the only place that calls them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from slack_backend.queue._keys import KEY_NAMES, QueueKeys

SCRIPT_NAMES: tuple[str, ...] = (
    "add",
    "clean",
    "complete",
    "configure",
    "drain",
    "extend",
    "fail",
    "fetch",
    "hold",
    "pause",
    "progress",
    "release",
    "remove",
    "retry",
    "stalled",
)

_INCLUDE = re.compile(r"^--@include (\S+)$", re.MULTILINE)


def _read(name: str) -> str:
    return resources.files("slack_backend.queue").joinpath("scripts", name).read_text(encoding="utf-8")


def _binding_prologue() -> str:
    names = ", ".join(f"'{n}'" for n in KEY_NAMES)
    return f"local k = {{}}\nfor i, name in ipairs({{{names}}}) do k[name] = KEYS[i] end\n"


@cache
def script_source(name: str) -> str:
    """A script's full text: its include pasted in and the `k` table bound from KEYS."""
    text = _read(f"{name}.lua")

    def paste(match: re.Match[str]) -> str:
        return _binding_prologue() + _read(match.group(1))

    return _INCLUDE.sub(paste, text, count=1)


class Scripts:
    """The queue's scripts registered on one client; redis-py runs them by SHA and reloads after a flush."""

    def __init__(self, client: Redis, keys: QueueKeys) -> None:
        self._keys = keys.all()
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def call(self, name: str, args: Sequence[str | int | float | bytes]) -> object:
        """Run one script atomically on the queue's keys."""
        result: object = await self._scripts[name](keys=self._keys, args=list(args))
        return result
