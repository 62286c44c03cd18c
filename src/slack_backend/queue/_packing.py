"""Commands packed in C: redis-py's connection classes with `pack_command` done by hiredis.

redis-py builds each command's wire bytes in Python, argument by argument. A `complete` call that finishes ten
jobs and fetches ten more carries 66 arguments and took about 340 us to pack, more than the rest of the worker's
own work for those jobs; hiredis packs the same bytes in about 20 us. The bytes are the same (test_redis_packing).
Whatever hiredis refuses (a bool, None, a list: redis-py refuses those too) and a command name with a space in it
(which redis-py splits into words) go to redis-py's own packer, so callers see exactly what they saw before.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.typing import EncodableT

C = TypeVar("C", bound=type[AbstractConnection])


def _pack_command(self: AbstractConnection, *args: EncodableT) -> list[bytes]:
    head = args[0] if args else b""
    if (isinstance(head, str) and " " in head) or (isinstance(head, bytes) and b" " in head):
        return AbstractConnection.pack_command(self, *args)
    try:
        return [hiredis.pack_command(cast(Any, args))]  # its stub types a one-element tuple
    except TypeError:
        return AbstractConnection.pack_command(self, *args)  # raises redis-py's own DataError for the same input


_made: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def packing_class(base: C) -> C:
    """`base` with its commands packed by hiredis, one class per base; a class already packing so is returned."""
    if getattr(base, "_packs_in_c", False):
        return base
    if base not in _made:
        _made[base] = type(f"Hiredis{base.__name__}", (base,), {"pack_command": _pack_command, "_packs_in_c": True})
    return cast(C, _made[base])
