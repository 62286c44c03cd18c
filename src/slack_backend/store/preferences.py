"""Each user's drafting preferences (tone, length, language, instructions, signature, consent, quiet hours)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Boolean, CheckConstraint, Column, Integer, String, Table, Text, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store.db import UTCDateTime, dialect_insert, in_connection, in_transaction, metadata, utc_now

TONES = ("casual", "friendly", "neutral", "formal")
LENGTHS = ("brief", "medium", "detailed")
MAX_INSTRUCTIONS_CHARS = 500
MAX_SIGNATURE_CHARS = 100
MAX_LANGUAGE_CHARS = 40
MAX_TIME_ZONE_CHARS = 64

user_preferences_table = Table(
    "user_preferences",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("tone", String(16), nullable=True),
    Column("length", String(16), nullable=True),
    Column("language", String(MAX_LANGUAGE_CHARS), nullable=True),
    Column("custom_instructions", Text, nullable=True),
    Column("signature", String(MAX_SIGNATURE_CHARS), nullable=True),
    # Consent to read the user's own messages as style examples: off until they turn it on.
    Column("learn_from_messages", Boolean, nullable=False),
    Column("quiet_start_hour", Integer, nullable=True),
    Column("quiet_end_hour", Integer, nullable=True),
    Column("time_zone", String(MAX_TIME_ZONE_CHARS), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("quiet_start_hour IS NULL OR (quiet_start_hour >= 0 AND quiet_start_hour < 24)", name="start"),
    CheckConstraint("quiet_end_hour IS NULL OR (quiet_end_hour >= 0 AND quiet_end_hour < 24)", name="end"),
)

# Built once (see store/audit.py). A draft reads these in its start read instead (SuggestionStore.draft_start).
_GET = select(user_preferences_table).where(
    user_preferences_table.c.workspace_id == bindparam("b_workspace_id"),
    user_preferences_table.c.user_id == bindparam("b_user_id"),
)


@dataclass(frozen=True, slots=True)
class Preferences:
    """One user's settings; the defaults are what a user who never opened App Home gets."""

    tone: str | None = None
    length: str | None = None
    language: str | None = None
    custom_instructions: str | None = None
    signature: str | None = None
    learn_from_messages: bool = False
    quiet_start_hour: int | None = None
    quiet_end_hour: int | None = None
    time_zone: str | None = None

    def in_quiet_hours(self, now: datetime) -> bool:
        """Whether `now` (aware) falls in the user's quiet hours, read on their clock (UTC when no zone is known).

        Start and end are whole hours; a start after the end spans midnight (22 -> 7); equal hours mean no quiet.
        """
        start, end = self.quiet_start_hour, self.quiet_end_hour
        if start is None or end is None or start == end:
            return False
        hour = now.astimezone(_zone(self.time_zone)).hour
        return start <= hour < end if start < end else hour >= start or hour < end


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def validate_preferences(prefs: Preferences) -> Preferences:
    """The preferences with blank text cleared; raises ValueError naming the first bad value."""
    cleared: dict[str, Any] = {}
    for name in ("language", "custom_instructions", "signature", "time_zone"):
        value = getattr(prefs, name)
        if isinstance(value, str):
            cleared[name] = value.strip() or None
    prefs = replace(prefs, **cleared)
    if prefs.tone is not None and prefs.tone not in TONES:
        raise ValueError(f"tone must be one of {', '.join(TONES)}")
    if prefs.length is not None and prefs.length not in LENGTHS:
        raise ValueError(f"length must be one of {', '.join(LENGTHS)}")
    limits = {
        "language": MAX_LANGUAGE_CHARS,
        "custom_instructions": MAX_INSTRUCTIONS_CHARS,
        "signature": MAX_SIGNATURE_CHARS,
        "time_zone": MAX_TIME_ZONE_CHARS,
    }
    for name, limit in limits.items():
        value = getattr(prefs, name)
        if value is not None and len(value) > limit:
            raise ValueError(f"{name} must be at most {limit} characters")
    for name in ("quiet_start_hour", "quiet_end_hour"):
        hour = getattr(prefs, name)
        if hour is not None and not 0 <= hour <= 23:
            raise ValueError(f"{name} must be an hour from 0 to 23")
    if prefs.time_zone is not None:
        try:
            ZoneInfo(prefs.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("time_zone must be an IANA zone name like Europe/Amsterdam") from exc
    return prefs


_FIELDS = tuple(f.name for f in fields(Preferences))


def preferences_from(values: Any, prefix: str = "") -> Preferences:
    """The Preferences of a selected row's columns named `prefix` + field (the defaults when the row is missing:
    an outer join's nulls, or no row at all)."""
    if values is None or values[f"{prefix}user_id"] is None:
        return Preferences()
    return Preferences(**{name: values[f"{prefix}{name}"] for name in _FIELDS})


class PreferenceStore:
    """Reads and saves preferences by (workspace, user).

    Args:
        engine: the database; its tables are made by `create_tables`.
        clock: returns the current time, timezone-aware (tests pass a fake one).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def get(self, workspace_id: str, user_id: str) -> Preferences:
        """The user's preferences, or the defaults when they saved none."""
        params = {"b_workspace_id": workspace_id, "b_user_id": user_id}
        row = await in_connection(self._engine, lambda conn: conn.execute(_GET, params).one_or_none())
        return preferences_from(None if row is None else row._mapping)

    async def update(self, workspace_id: str, user_id: str, **changes: Any) -> Preferences:
        """Change some fields (None clears one) and save; returns the saved preferences.

        Raises:
            ValueError: an unknown field, or a value out of range (nothing is saved then).
        """
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown preference {sorted(unknown)[0]!r}")
        current = await self.get(workspace_id, user_id)
        saved = validate_preferences(replace(current, **changes))
        values = {name: getattr(saved, name) for name in _FIELDS} | {"updated_at": self._clock()}
        insert = dialect_insert(self._engine, user_preferences_table).values(
            workspace_id=workspace_id, user_id=user_id, **values
        )
        statement = insert.on_conflict_do_update(
            index_elements=[user_preferences_table.c.workspace_id, user_preferences_table.c.user_id], set_=values
        )
        await in_transaction(self._engine, lambda conn: conn.execute(statement))
        return saved
