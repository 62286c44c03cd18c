"""What the prompt says of people and time: names beside ids, the message replied to, today's date."""

from __future__ import annotations

from datetime import UTC, datetime

from slack_backend.ai import ContextMessage, DraftRequest
from slack_backend.ai.prompt import build_messages

NOW = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)


def content(request: DraftRequest) -> str:
    [message] = build_messages(request)
    text = message["content"]
    assert isinstance(text, str)
    return text


def test_a_shortcut_names_the_author_of_the_message_and_dates_in_utc_when_no_zone_is_known() -> None:
    """A shortcut's message is answered by name; with no time zone from Slack the date is UTC's."""
    text = content(
        DraftRequest(
            trigger_text="Can you send the Q3 numbers?",
            context=(),
            requester_user_id="U1",
            names={"U1": "Kenji", "U2": "Ana <Lima>"},
            now=NOW,
            trigger_user_id="U2",
        )
    )
    assert "<message>\nCan you send the Q3 numbers?\n</message>" in text
    assert "Draft my reply to the message above, written by Ana Lima (<@U2>)" in text, "no markup from a name"
    assert "I am Kenji (<@U1>). Today is Tuesday, 01 December 2026, 23:30 (time zone UTC)." in text


def test_a_thread_reply_marks_the_newest_message_not_by_the_requester() -> None:
    """A bare thread mention: the newest message by someone else is marked as the one to answer; unknown people
    are shown by id, and nothing is dated without a clock."""
    thread = (
        ContextMessage("U2", "Lunch on Friday?", "1700000000.000100"),
        ContextMessage("U3", "Or Monday?", "1700000060.000100"),
        ContextMessage("U1", "hmm", "1700000120.000100"),
    )
    text = content(DraftRequest(trigger_text="", context=thread, requester_user_id="U1", names={"U2": "Ana"}))
    assert "Ana (<@U2>), Tue 14 Nov 22:13: Lunch on Friday?" in text
    assert "<@U3>, Tue 14 Nov 22:14 [reply to this]: Or Monday?" in text
    assert text.count("[reply to this]:") == 1
    assert "Draft my reply to the thread message marked [reply to this]" in text
    assert "Today is" not in text
