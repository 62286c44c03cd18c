"""Plain-text tables of `jobs counts` and `check-config`: aligned columns, data that cannot drive the terminal."""

from __future__ import annotations

import pytest

from slack_backend._text_table import text_table


def test_columns_line_up_with_numbers_on_the_right() -> None:
    """Each column is as wide as its widest cell; right-aligned columns pad on the left, others on the right."""
    table = text_table(("state", "jobs"), [("waiting", 4), ("completed", 1200)], title="queue q", right={1})
    assert table.splitlines() == [
        "queue q",
        "state      jobs",
        "---------  ----",
        "waiting       4",
        "completed  1200",
    ]


def test_control_characters_in_data_are_shown_escaped() -> None:
    """An escape sequence or line break in a value (a workspace name from Redis, an env var) prints as text."""
    table = text_table(("workspace", "waiting"), [("T1\x1b[2J\nfake row", 3)], title="busiest\x07")
    assert "\x1b" not in table
    assert "\x07" not in table
    assert table.splitlines()[0] == "busiest\\x07"
    assert table.splitlines()[3] == "T1\\x1b[2J\\nfake row  3"


def test_wide_characters_take_two_columns() -> None:
    """A CJK value counts as two terminal columns, so the next column still lines up."""
    table = text_table(("name", "n"), [("東京", 1), ("abcd", 2)])
    assert table.splitlines()[2:] == ["東京  1", "abcd  2"]


def test_a_row_with_too_few_cells_is_refused() -> None:
    """A row that does not match the headers is a bug in the caller, not a silently shifted table."""
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        text_table(("a", "b"), [("only",)])
