"""Block Kit and plain texts the user sees: the draft (split to fit Slack's limits), progress, and failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Slack's limits: a section's text, blocks per message, and (msg_blocks_too_long, ~13k) the text of all blocks.
SECTION_MAX_CHARS = 3_000
MESSAGE_MAX_BLOCKS = 50
MESSAGE_MAX_TEXT_CHARS = 12_000

DRAFT_HEADER = "Draft reply (only you can see this)"
OFFLINE_DRAFT_LABEL = "[offline draft - no ANTHROPIC_API_KEY set]"
EMPTY_DRAFT_TEXT = "(the draft came out empty)"

# Room kept in every message for its header blocks, so packing the draft never pushes a message over a limit.
_HEADER_BLOCKS = 2
_HEADER_MAX_CHARS = 200
# Breaks tried in order when a text is too long: paragraphs, then lines, then words (then mid-word as a last resort).
_SEPARATORS = ("\n\n", "\n", " ")
_FALLBACK_PREVIEW_CHARS = 200

_PROGRESS_TEXTS = {
    "queued": "Your request is in the queue...",
    "context": "Reading the conversation...",
    "drafting": "Drafting a reply...",
    "delivering": "Almost done...",
}
_DEFAULT_PROGRESS_TEXT = "Drafting a reply..."
_FAILURE_PREFIX = "Sorry, I couldn't draft a reply"
_UNKNOWN_FAILURE = "Sorry, something went wrong while drafting your reply. Please try again."

BlockDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DraftMessage:
    """One Slack message of a draft: its blocks, and the plain `text` Slack shows in notifications."""

    blocks: list[BlockDict]
    text: str


def escape_mrkdwn(text: str) -> str:
    """Escape `&`, `<` and `>` as Slack requires, so user text cannot form links, mentions or broadcasts."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def draft_messages(text: str, *, offline: bool) -> list[DraftMessage]:
    """The draft as one or more messages, each within Slack's section, block and message-size limits.

    The draft is split on paragraph, then line, then word boundaries; only whitespace at the split points is lost.
    Every message opens with a context line saying only the user sees it and, for an offline draft, a clear label.
    """
    sections = split_text(text, SECTION_MAX_CHARS) or [EMPTY_DRAFT_TEXT]
    groups: list[list[str]] = [[]]
    group_chars = 0
    for section in sections:
        section_chars = _escaped_len(section)
        full = len(groups[-1]) >= MESSAGE_MAX_BLOCKS - _HEADER_BLOCKS
        too_long = group_chars + section_chars > MESSAGE_MAX_TEXT_CHARS - _HEADER_MAX_CHARS
        if groups[-1] and (full or too_long):
            groups.append([])
            group_chars = 0
        groups[-1].append(section)
        group_chars += section_chars
    total = len(groups)
    return [_message(group, part=index + 1, total=total, offline=offline) for index, group in enumerate(groups)]


def draft_blocks(text: str, *, offline: bool) -> list[list[BlockDict]]:
    """The blocks of each message of the draft (see `draft_messages`)."""
    return [message.blocks for message in draft_messages(text, offline=offline)]


def split_text(text: str, limit_chars: int) -> list[str]:
    """Raw pieces of `text`, each `limit_chars` or shorter once escaped, broken at the largest boundary that fits.

    Pieces are stripped of surrounding whitespace and empty ones dropped.
    """
    if limit_chars < 8:
        # An escaped character takes up to 5 chars; below this a piece could not always hold one.
        raise ValueError("limit_chars must be at least 8")
    pieces = (piece.strip() for piece in _split(text, limit_chars, 0))
    return [piece for piece in pieces if piece]


def progress_text(stage: str) -> str:
    """What the user sees while the job works: "Drafting a reply..." and the like, by stage."""
    return _PROGRESS_TEXTS.get(stage, _DEFAULT_PROGRESS_TEXT)


def failure_text(reason: str) -> str:
    """Plain words telling the user their draft failed: "Sorry, I couldn't draft a reply: <reason>."

    A reason that is already a whole apology (starting "Sorry") is used as it is. The text is escaped for mrkdwn.
    """
    reason = " ".join(reason.split())
    if not reason:
        return _UNKNOWN_FAILURE
    if reason.startswith("Sorry"):
        return escape_mrkdwn(reason)
    sentence = reason if reason.endswith((".", "!", "?")) else f"{reason}."
    return escape_mrkdwn(f"{_FAILURE_PREFIX}: {sentence}")


def _message(sections: list[str], *, part: int, total: int, offline: bool) -> DraftMessage:
    header = DRAFT_HEADER if total == 1 else f"{DRAFT_HEADER} - part {part} of {total}"
    blocks: list[BlockDict] = [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f":memo: {header}"}]},
    ]
    if offline:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f":warning: *{OFFLINE_DRAFT_LABEL}*"}})
    blocks.extend({"type": "section", "text": {"type": "mrkdwn", "text": escape_mrkdwn(s)}} for s in sections)
    preview = " ".join(sections[0].split())
    if len(preview) > _FALLBACK_PREVIEW_CHARS:
        cut = preview[:_FALLBACK_PREVIEW_CHARS]
        preview = (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "..."
    label = f" {OFFLINE_DRAFT_LABEL}" if offline else ""
    return DraftMessage(blocks=blocks, text=f"{header}{label}: {escape_mrkdwn(preview)}")


def _escaped_len(text: str) -> int:
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def _split(text: str, limit: int, level: int) -> list[str]:
    if _escaped_len(text) <= limit:
        return [text]
    if level == len(_SEPARATORS):
        return _split_anywhere(text, limit)
    separator = _SEPARATORS[level]
    chunks: list[str] = []
    current: list[str] = []
    current_len = 0
    for piece in text.split(separator):
        piece_len = _escaped_len(piece)
        if piece_len > limit:
            if current:
                chunks.append(separator.join(current))
                current, current_len = [], 0
            chunks.extend(_split(piece, limit, level + 1))
            continue
        joined_len = current_len + len(separator) + piece_len if current else piece_len
        if current and joined_len > limit:
            chunks.append(separator.join(current))
            current, joined_len = [], piece_len
        current.append(piece)
        current_len = joined_len
    if current:
        chunks.append(separator.join(current))
    return chunks


def _split_anywhere(text: str, limit: int) -> list[str]:
    # One unbroken run longer than a section (a URL, a code line): cut between characters, never inside an entity.
    chunks: list[str] = []
    start = 0
    length = 0
    for index, char in enumerate(text):
        char_len = _escaped_len(char)
        if length + char_len > limit:
            chunks.append(text[start:index])
            start, length = index, 0
        length += char_len
    chunks.append(text[start:])
    return chunks
