"""Who said what, and when, as the prompt shows it: display names, message times and today's date in the
requester's time zone, and which message the reply answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo

from slack_backend.ai.types import ContextMessage

# Marks the thread message the draft replies to (a mention in a thread names no message of its own).
REPLY_MARK = "[reply to this]"
_MAX_NAME_CHARS = 80


def speaker(user_id: str, names: Mapping[str, str]) -> str:
    """A message's author as the model reads it: "Ana Lima (<@U123>)", or the bare mention when no name is known."""
    name = " ".join(names.get(user_id, "").split())[:_MAX_NAME_CHARS].replace("<", "").replace(">", "")
    return f"{name} (<@{user_id}>)" if name else f"<@{user_id}>"


def message_time(ts: str, zone: tzinfo) -> str:
    """A Slack ts as a short local time ("Mon 30 Nov 14:05"); the raw ts when it is not a number."""
    try:
        moment = datetime.fromtimestamp(float(ts), UTC).astimezone(zone)
    except (ValueError, OverflowError, OSError):
        return f"ts {ts}"
    return moment.strftime("%a %d %b %H:%M")


def today_line(now: datetime) -> str:
    """ "Today is Tuesday, 01 December 2026 (time zone Europe/Lisbon)." in the requester's zone."""
    zone = now.tzname() if now.tzinfo is not None else "UTC"
    label = getattr(now.tzinfo, "key", None) or zone or "UTC"
    return f"Today is {now.strftime('%A, %d %B %Y')}, {now.strftime('%H:%M')} (time zone {label})."


def reply_target(context: Sequence[ContextMessage], requester_user_id: str) -> str | None:
    """The ts of the thread message a bare reply answers: the newest one not written by the requester."""
    for message in reversed(context):
        if message.user_id != requester_user_id:
            return message.ts
    return None


def thread_lines(
    context: Sequence[ContextMessage], names: Mapping[str, str], zone: tzinfo, reply_to_ts: str | None
) -> str:
    """The thread, one message a line: author, local time, text; the message replied to marked."""
    lines = []
    for message in context:
        mark = f" {REPLY_MARK}" if message.ts == reply_to_ts else ""
        when = message_time(message.ts, zone)
        lines.append(f"{speaker(message.user_id, names)}, {when}{mark}: {message.text}")
    return "\n".join(lines)
