"""Aligned plain-text tables for the command line's light commands, which start too often to import rich for one."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Sequence

# Between columns; wide enough to read the columns apart without rules between them.
GAP = "  "


def cell(value: object) -> str:
    """`value` as one line of printable text: a control character (from Redis or the environment) is shown
    escaped, so data can neither move the cursor nor break a row."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def width(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def text_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    right: Collection[int] = (),
) -> str:
    """The table as text: an optional title line, the headers, a rule, then one line per row.

    Args:
        columns: the headers.
        rows: the cells, one sequence per row, as many as `columns`; each is shown with `cell`.
        title: a line above the headers.
        right: indexes of the columns aligned right (numbers); the others align left.
    """
    header = [cell(c) for c in columns]
    body = [[cell(v) for v in row] for row in rows]
    for row in body:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns")
    widths = [max(width(text) for text in column) for column in zip(header, *body, strict=True)]

    def line(texts: Sequence[str]) -> str:
        padded = [
            " " * (w - width(t)) + t if i in right else t + " " * (w - width(t))
            for i, (t, w) in enumerate(zip(texts, widths, strict=True))
        ]
        return GAP.join(padded).rstrip()

    lines = [] if title is None else [cell(title)]
    lines += [line(header), GAP.join("-" * w for w in widths)]
    lines += [line(row) for row in body]
    return "\n".join(lines)
