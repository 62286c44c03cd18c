"""How one setting's text becomes its value: the parsers, the secret wrapper and the rule each field carries.

Every reason is worded to follow a variable's name (`PORT: must be at most 65535`) and never quotes the input, which
may be a secret. config.py declares the fields; this module only turns text into values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
# What a field's earlier fields hold once read (their defaults when not given); a failed field is absent.
Known = Mapping[str, Any]
Parse = Callable[[str], Any]
# A check takes the parsed value and the earlier fields, and returns the value to keep (maybe normalised);
# it raises ValueError with the reason, or VariableError to name another variable.
Check = Callable[[Any, Known], Any]

RULE_KEY = "setting_rule"
MASK = "********"

# Integers as written in an environment: ASCII digits, `_` between them, an optional `.0` ("8.0" is 8).
_INTEGER = re.compile(r"[+-]?[0-9](?:_?[0-9])*(?:\.0*)?")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class VariableError(ValueError):
    """A cross-field error reported against another variable than the field being checked."""

    def __init__(self, variable: str, reason: str) -> None:
        self.variable = variable
        super().__init__(reason)


class Secret:
    """A secret setting's value: `get_secret_value()` gives it; str() and repr() never do."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Rule:
    """How a field is read: `parse` turns the text into a value, then each check runs in order.

    `always`: the checks also run when the variable is not set (for pairs, where the missing one is the error).
    """

    parse: Parse
    checks: tuple[Check, ...] = ()
    always: bool = False


def setting(default: T, parse: Parse, *checks: Check, always: bool = False, in_repr: bool = True) -> T:
    """A Settings field: its default, and the rule `read_value` applies to its variable's text."""
    return field(default=default, repr=in_repr, metadata={RULE_KEY: Rule(parse, checks, always)})


def text(value: str) -> str:
    """Any text, as given."""
    return value


def secret(value: str) -> Secret:
    """Any text, kept out of repr, logs and tables."""
    return Secret(value)


def boolean(value: str) -> bool:
    """true/false, 1/0, yes/no, on/off, t/f or y/n, in any case."""
    folded = value.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError("must be a boolean (true/false, 1/0, yes/no, on/off)")


def integer(ge: int | None = None, le: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers within [ge, le] (either bound optional)."""

    def parse(value: str) -> int:
        written = value.strip()
        if not _INTEGER.fullmatch(written):
            raise ValueError("must be an integer")
        found = int(written.partition(".")[0])
        _check_bounds(found, ge=ge, le=le)
        return found

    return parse


def number(gt: float | None = None, ge: float | None = None, le: float | None = None) -> Callable[[str], float]:
    """A parser of finite numbers above gt (or from ge) up to le."""

    def parse(value: str) -> float:
        written = value.strip()
        try:
            # float() would also read other scripts' digits; a setting is written in ASCII.
            found = float(written) if written.isascii() else None
        except ValueError:
            found = None
        if found is None:
            raise ValueError("must be a number")
        if not math.isfinite(found):
            raise ValueError("must be a finite number")
        _check_bounds(found, gt=gt, ge=ge, le=le)
        return found

    return parse


def _check_bounds(found: float, *, gt: float | None = None, ge: float | None = None, le: float | None = None) -> None:
    if gt is not None and found <= gt:
        raise ValueError(f"must be greater than {gt}")
    if ge is not None and found < ge:
        raise ValueError(f"must be at least {ge}")
    if le is not None and found > le:
        raise ValueError(f"must be at most {le}")


def choice(*allowed: str, fold: Callable[[str], str]) -> Callable[[str], str]:
    """A parser of one of `allowed`, compared after `fold` (str.upper or str.lower)."""

    def parse(value: str) -> str:
        folded = fold(value)
        if folded not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return folded

    return parse


def read_value(rule: Rule, given: str | None, default: object, known: Known) -> object:
    """The value of one field: `given` parsed and checked, or `default` (checked too when the rule says always).

    Raises ValueError (or VariableError) with the reason.
    """
    if given is None:
        if not rule.always:
            return default
        value = default
    else:
        value = rule.parse(given)
    for check in rule.checks:
        value = check(value, known)
    return value
