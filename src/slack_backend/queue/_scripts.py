"""Loads the Lua scripts once (with their shared includes) and is the only place that calls them."""

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


_FUNCTION = re.compile(r"^local function (\w+)\(.*?^end$", re.MULTILINE | re.DOTALL)
_KEY_USE = re.compile(r"\bk\.(\w+)")


@cache
def script_keys(name: str) -> tuple[str, ...]:
    """The keys a script can reach: its own `k.<name>` uses and those of the shared functions it calls.

    Each call then carries only these (a fetch 16 keys, an add 10, not all 21): packing key names was a
    measurable share of every call's client time. A script that indexes `k[...]` by value gets them all.
    """
    text = _read(f"{name}.lua")
    body = _INCLUDE.sub("", text)
    if "k[" in body:
        return KEY_NAMES
    shared = "\n".join(_read(m.group(1)) for m in _INCLUDE.finditer(text))
    functions = {m.group(1): m.group(0) for m in _FUNCTION.finditer(shared)}
    used: set[str] = set()
    reached: set[str] = set()
    pending = [body]
    while pending:
        text = pending.pop()
        used.update(_KEY_USE.findall(text))
        for fn, source in functions.items():
            if fn not in reached and re.search(rf"\b{fn}\(", text):
                reached.add(fn)
                pending.append(source)
    unknown = used - set(KEY_NAMES)
    if unknown:
        raise ValueError(f"script {name} uses undeclared keys: {sorted(unknown)}")
    return tuple(n for n in KEY_NAMES if n in used)


def _binding_prologue(names: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{n}'" for n in names)
    # A key the scan missed fails loudly rather than reaching redis.call as nil.
    guard = "setmetatable(k, {__index = function(_, n) error('script reached an unbound key: ' .. n) end})"
    return f"local k = {{}}\nfor i, name in ipairs({{{listed}}}) do k[name] = KEYS[i] end\n{guard}\n"


@cache
def script_source(name: str) -> str:
    """A script's full text: its includes pasted in, the `k` table bound from KEYS before the first."""
    text = _read(f"{name}.lua")
    pasted: list[str] = []

    def paste(match: re.Match[str]) -> str:
        prologue = "" if pasted else _binding_prologue(script_keys(name))
        pasted.append(match.group(1))
        return prologue + _read(match.group(1))

    return _INCLUDE.sub(paste, text)


class Scripts:
    """The queue's scripts registered on one client; redis-py runs them by SHA and reloads after a flush."""

    def __init__(self, client: Redis, keys: QueueKeys) -> None:
        self._keys = {name: [keys.key(n) for n in script_keys(name)] for name in SCRIPT_NAMES}
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def call(self, name: str, args: Sequence[str | int | float | bytes]) -> object:
        """Run one script atomically on the queue's keys."""
        result: object = await self._scripts[name](keys=self._keys[name], args=list(args))
        return result
