"""The Lua scripts: each declares its keys and arguments, touches only declared keys, and loads by SHA."""

from __future__ import annotations

import re

import pytest

from slack_backend.queue._keys import KEY_NAMES, QueueKeys
from slack_backend.queue._scripts import SCRIPT_NAMES, _read, script_source
from tests.support.engine import QueueFactory


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_header_declares_keys_args_and_returns(name: str) -> None:
    """Every script opens with its role, its KEYS binding, ARGV and return codes."""
    head = _read(f"{name}.lua").splitlines()
    assert head[0].startswith(f"-- {name}: ")
    text = "\n".join(head[:16])
    assert "-- KEYS: the queue's key set" in text
    assert "ARGV[1]" in text
    assert "-- Returns:" in text


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_touches_only_declared_keys(name: str) -> None:
    """Keys are reached only through the `k` table bound from KEYS, and every name used is a declared key."""
    source = script_source(name)
    used = set(re.findall(r"\bk\.(\w+)", source)) | set(re.findall(r"\bk\[state\]", source))
    used.discard("k[state]")
    assert used <= set(KEY_NAMES), used - set(KEY_NAMES)
    assert "KEYS[" not in _read(f"{name}.lua"), "scripts must not index KEYS directly (the loader binds `k`)"
    assert ".. ARGV" not in source, "no key is built from ARGV"


def test_every_key_shares_one_hash_tag() -> None:
    """All keys of a queue carry the same {prefix:name} tag, so Redis Cluster keeps them in one slot."""
    keys = QueueKeys("sb", "ai-responses").all()
    assert len(keys) == len(KEY_NAMES)
    assert all(k.startswith("{sb:ai-responses}:") for k in keys)


def test_bad_prefix_or_name_is_refused() -> None:
    """Braces, NUL or empty names would break the hash tag and are refused."""
    for prefix, name in (("a{b", "q"), ("sb", "q}"), ("", "q"), ("sb", "")):
        with pytest.raises(ValueError, match="must be non-empty"):
            QueueKeys(prefix, name)


async def test_scripts_reload_after_script_flush(make_queue: QueueFactory) -> None:
    """After SCRIPT FLUSH the scripts load again by themselves (called by SHA, reloaded on NOSCRIPT)."""
    queue = make_queue()
    await queue.add("a", {})
    await queue.redis.script_flush()
    await queue.add("b", {})
    assert sum((await queue.counts()).values()) == 2
