"""Loads the Lua scripts once (with their shared includes) and is the only place that calls them."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import PipelineCommand
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slack_backend.queue._keys import KEY_NAMES, QueueKeys
from slack_backend.queue.connection import RedisClient

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


@cache
def _read(name: str) -> str:
    return resources.files("slack_backend.queue").joinpath("scripts", name).read_text(encoding="utf-8")


_FUNCTION = re.compile(r"^local function (\w+)\(.*?^end$", re.MULTILINE | re.DOTALL)
_KEY_USE = re.compile(r"\bk\.(\w+)")
_CALL = re.compile(r"\b(\w+)\(")


# Each include is parsed, and each function scanned, once per process rather than once per script (and the calls
# found in one pass, not one search per shared function): building the queue's 15 scripts took ~40 ms of every
# start, `slack-backend jobs counts` included, and now takes a few.
@cache
def _spans(include: str) -> tuple[tuple[str, int, int], ...]:
    """Where an include's local functions are: (name, start, end)."""
    return tuple((m.group(1), m.start(), m.end()) for m in _FUNCTION.finditer(_read(include)))


@cache
def _functions(include: str) -> Mapping[str, str]:
    """An include's local functions: name to source."""
    text = _read(include)
    return {fn: text[start:end] for fn, start, end in _spans(include)}


@cache
def _scan(code: str) -> tuple[frozenset[str], frozenset[str]]:
    """The names `code` calls (`name(`) and the keys it names (`k.<name>`)."""
    return frozenset(_CALL.findall(code)), frozenset(_KEY_USE.findall(code))


@cache
def _reach(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """The shared functions a script calls (directly or through others), and the keys its code names."""
    text = _read(f"{name}.lua")
    functions: dict[str, str] = {}
    for include in _INCLUDE.finditer(text):
        functions.update(_functions(include.group(1)))
    used: set[str] = set()
    reached: set[str] = set()
    pending = [_INCLUDE.sub("", text)]
    while pending:
        calls, keys = _scan(pending.pop())
        used |= keys
        for fn in sorted((calls & functions.keys()) - reached):
            reached.add(fn)
            pending.append(functions[fn])
    return frozenset(reached), frozenset(used)


@cache
def script_keys(name: str) -> tuple[str, ...]:
    """The keys a script can reach: its own `k.<name>` uses and those of the shared functions it calls.

    Each call then carries only these (a fetch 16 keys, an add 11, not all 21): packing key names was a
    measurable share of every call's client time. A script that indexes `k[...]` by value gets them all.
    """
    if "k[" in _INCLUDE.sub("", _read(f"{name}.lua")):
        return KEY_NAMES
    used = _reach(name)[1]
    unknown = used - set(KEY_NAMES)
    if unknown:
        raise ValueError(f"script {name} uses undeclared keys: {sorted(unknown)}")
    return tuple(n for n in KEY_NAMES if n in used)


def _pruned(include: str, reached: frozenset[str]) -> str:
    """An include (by name) with only the functions in `reached`: Lua builds every local function on each call."""
    text = _read(include)
    kept: list[str] = []
    at = 0
    for fn, start, end in _spans(include):
        kept.append(text[at:start])
        if fn in reached:
            kept.append(text[start:end])
        at = end
    kept.append(text[at:])
    return re.sub(r"\n{3,}", "\n\n", "".join(kept))


def _binding_prologue(names: tuple[str, ...]) -> str:
    # One table constructor: Lua sizes the table once, where a loop of inserts grew it step by step on every call
    # (about 18,000 of an add's 207,000 instructions inside Redis).
    bound = ", ".join(f"{n} = KEYS[{i}]" for i, n in enumerate(names, 1))
    # A key the scan missed fails loudly rather than reaching redis.call as nil.
    guard = "setmetatable(k, {__index = function(_, n) error('script reached an unbound key: ' .. n) end})"
    return f"local k = {{{bound}}}\n{guard}\n"


@cache
def script_source(name: str) -> str:
    """A script's full text: its includes pasted in (the functions it calls), `k` bound from KEYS before them."""
    text = _read(f"{name}.lua")
    pasted: list[str] = []

    def paste(match: re.Match[str]) -> str:
        prologue = "" if pasted else _binding_prologue(script_keys(name))
        pasted.append(match.group(1))
        return prologue + _pruned(match.group(1), _reach(name)[0])

    return _INCLUDE.sub(paste, text)


def keyed_script(client: RedisClient, name: str) -> AsyncScript:
    """A script that is given its keys by the caller, not the queue's key set: the rate gate's `acquire`."""
    script: AsyncScript = client.register_script(_read(f"{name}.lua"))
    return script


class Scripts:
    """The queue's scripts registered on one client; redis-py runs them by SHA and reloads after a flush."""

    def __init__(self, client: RedisClient, keys: QueueKeys) -> None:
        self._client = client
        self._queue_keys = keys
        # Each script is built at its first call, not with the queue: a command that reads counts runs none, and
        # building all 15 was 12 ms of its start (docs/performance.md, round 21).
        self._bound: dict[str, tuple[AsyncScript, list[str]]] = {}

    def _script(self, name: str) -> tuple[AsyncScript, list[str]]:
        """A script registered on the client, and the key names it is called with."""
        bound = self._bound.get(name)
        if bound is None:
            if name not in SCRIPT_NAMES:
                raise KeyError(f"no script named {name!r}")
            keys = [self._queue_keys.key(n) for n in script_keys(name)]
            bound = self._bound[name] = (self._client.register_script(script_source(name)), keys)
        return bound

    def wire(self, name: str) -> tuple[str, list[str]]:
        """A script's SHA-1 and the key names it is called with, for a caller that packs the call itself."""
        script, keys = self._script(name)
        return script.sha, keys

    async def call_after_blpop(
        self,
        client: RedisClient,
        wait_keys: Sequence[str],
        timeout_s: float,
        name: str,
        args: Sequence[str | int | float],
    ) -> object:
        """BLPOP, then the script, pipelined on `client`; the script's reply, or None after reloading it."""
        script, keys = self._script(name)
        if isinstance(client, RedisCluster):
            reply = await _blpop_then_script_on_shard(client, wait_keys, timeout_s, script.sha, keys, args)
        else:
            async with client.pipeline(transaction=False) as pipe:
                pipe.blpop(list(wait_keys), timeout=timeout_s)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                _popped, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):
            # After a SCRIPT FLUSH or a restart of Redis: the wake token is spent, so the caller fetches anew.
            await client.script_load(script.script)
            return None
        if isinstance(reply, Exception):
            raise reply
        result: object = reply
        return result

    async def call_then_wait(
        self, client: RedisClient, name: str, args: Sequence[str | int | float], replicas: int, timeout_ms: int
    ) -> tuple[object, int]:
        """Run a script, then WAIT on the same connection; its reply and how many replicas hold its writes.

        WAIT counts the writes of the connection it runs on, so the two go down one pipeline: on a Cluster, to
        the primary that owns the queue's slot (its replicas are the ones that count).
        """
        script, keys = self._script(name)
        for _ in range(2):
            if isinstance(client, RedisCluster):
                reply, acked = await _script_then_wait_on_shard(client, script.sha, keys, args, replicas, timeout_ms)
            else:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                    pipe.wait(replicas, timeout_ms)
                    reply, acked = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            # The script never ran (a flushed or failed-over server): load it and send both again.
            await client.script_load(script.script)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            raise acked
        return reply, int(acked)  # type: ignore[call-overload]

    async def call(self, name: str, args: Sequence[str | int | float | bytes]) -> object:
        """Run one script atomically on the queue's keys."""
        script, keys = self._script(name)
        result: object = await script(keys=keys, args=list(args))
        return result


# Replies that mean the slot moved or its node is gone: the cluster's map is re-read before the next try.
_SHARD_MOVED = (MovedError, AskError, ClusterDownError, TryAgainError, RedisConnectionError, RedisTimeoutError)


async def _blpop_then_script_on_shard(
    client: RedisCluster,
    wait_keys: Sequence[str],
    timeout_s: float,
    sha: str,
    keys: Sequence[str],
    args: Sequence[str | int | float],
) -> object:
    """BLPOP then EVALSHA, sent together on one connection to the primary that owns the queue's slot.

    redis-py's ClusterPipeline refuses EVALSHA, and a queue's keys share one hash tag, so the node is the same for
    both; after a MOVED or a lost node the cluster map is re-read and the error raised, so the caller retries on
    the new owner.
    """
    if not client.get_nodes():
        await client.initialize()
    node = client.get_node_from_key(wait_keys[0])
    if node is None:
        await client.nodes_manager.initialize()
        raise ClusterDownError(f"no node serves the slot of {wait_keys[0]}")
    commands = [
        PipelineCommand(0, "BLPOP", *wait_keys, timeout_s),
        PipelineCommand(1, "EVALSHA", sha, len(keys), *keys, *args),
    ]
    await node.execute_pipeline(commands)
    for command in commands:
        if isinstance(command.result, _SHARD_MOVED):
            await client.nodes_manager.initialize()
            raise command.result
    return commands[1].result


# A failover of the queue's shard answers MOVED, CLUSTERDOWN or a dead connection for a few seconds (node timeout
# plus the election): the add and its WAIT are sent again on the new owner within this many tries. Safe, since the
# job ids are chosen before the first send.
SHARD_WAIT_TRIES = 6
SHARD_RETRY_BASE_S = 0.1


async def _script_then_wait_on_shard(
    client: RedisCluster,
    sha: str,
    keys: Sequence[str],
    args: Sequence[str | int | float],
    replicas: int,
    timeout_ms: int,
) -> tuple[object, object]:
    """EVALSHA then WAIT, sent together on one connection to the primary that owns the queue's slot.

    A key-less WAIT sent through the cluster client could reach any node and count another connection's writes.
    """
    error: Exception = ClusterDownError("no try made")
    for attempt in range(SHARD_WAIT_TRIES):
        if attempt:
            await asyncio.sleep(SHARD_RETRY_BASE_S * 2 ** (attempt - 1))
        try:
            if not client.get_nodes():
                await client.initialize()
            node = client.get_node_from_key(keys[0])
            if node is None:
                await client.nodes_manager.initialize()
                error = ClusterDownError(f"no node serves the slot of {keys[0]}")
                continue
            commands = [
                PipelineCommand(0, "EVALSHA", sha, len(keys), *keys, *args),
                PipelineCommand(1, "WAIT", replicas, timeout_ms),
            ]
            await node.execute_pipeline(commands)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            error = exc
            await _reread_map(client)
            continue
        moved = next((c.result for c in commands if isinstance(c.result, _SHARD_MOVED)), None)
        if moved is None:
            return commands[0].result, commands[1].result
        error = moved
        await _reread_map(client)
    raise error


async def _reread_map(client: RedisCluster) -> None:
    """Ask the cluster who owns which slot now; a node that cannot answer yet is tried again by the caller."""
    with contextlib.suppress(RedisError, OSError):
        await client.nodes_manager.initialize()
