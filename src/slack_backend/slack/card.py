"""The suggestion card (Block Kit): the draft with its buttons, the notes that replace it, and its three modals."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from slack_backend.slack.messages import (
    DRAFT_HEADER,
    EMPTY_DRAFT_TEXT,
    MESSAGE_MAX_BLOCKS,
    MESSAGE_MAX_TEXT_CHARS,
    OFFLINE_DRAFT_LABEL,
    SECTION_MAX_CHARS,
    BlockDict,
    DraftMessage,
    escape_mrkdwn,
    split_text,
)

# action_id of each button; every button's value is the suggestion id and nothing else.
SEND = "card_send"
EDIT = "card_edit"
REFINE = "card_refine"
REGENERATE = "card_regenerate"
COPY = "card_copy"
DISMISS = "card_dismiss"
CARD_ACTIONS = (SEND, EDIT, REFINE, REGENERATE, COPY, DISMISS)
# callback_id of the modals that are submitted (Copy's only closes).
EDIT_VIEW = "card_edit_view"
REFINE_VIEW = "card_refine_view"
COPY_VIEW = "card_copy_view"

# Shown on a draft the model stopped at its output cap (AI_MAX_TOKENS), so nobody sends half a reply unawares.
CUT_SHORT_TEXT = "This draft was cut short: it reached the length limit."
TOO_LONG_FOR_CARD_TEXT = "The draft is longer than a card can show: Copy shows all of it."
# Slack's limits for modals: title 24 chars, 100 blocks, private_metadata 3,000 chars; a text input 3,000 chars.
VIEW_TITLE_MAX_CHARS = 24
VIEW_MAX_BLOCKS = 100
PRIVATE_METADATA_MAX_CHARS = 3_000
INPUT_MAX_CHARS = 3_000
INSTRUCTION_MAX_CHARS = 500
LANGUAGE_MAX_CHARS = 40
# block_id / action_id of the modals' inputs.
EDIT_BLOCK_PREFIX = "edit_"
EDIT_INPUT = "text"
PRESET_BLOCK, PRESET_INPUT = "preset", "preset"
LANGUAGE_BLOCK, LANGUAGE_INPUT = "language", "language"
INSTRUCTION_BLOCK, INSTRUCTION_INPUT = "instruction", "instruction"
TRANSLATE = "translate"
# What each Refine preset asks of the model.
PRESETS: dict[str, tuple[str, str]] = {
    "shorter": ("Shorter", "Make it shorter."),
    "formal": ("More formal", "Make it more formal."),
    "friendly": ("Friendlier", "Make it friendlier and warmer."),
    "detail": ("More detail", "Add more detail."),
    TRANSLATE: ("Translate to...", "Translate it into {language}."),
}

_REPLIES_TO_PREVIEW_CHARS = 80
# Blocks a card keeps for itself: header, offline label, notes, buttons.
_CARD_FIXED_BLOCKS = 6
_CARD_FIXED_CHARS = 1_000
_CARD_TEXT_BUDGET = MESSAGE_MAX_TEXT_CHARS - _CARD_FIXED_CHARS


@dataclass(frozen=True, slots=True)
class CardDraft:
    """What a card shows: the suggestion id (the buttons' value), its text, and what it replies to."""

    suggestion_id: str
    text: str
    offline: bool = False
    cut_short: bool = False
    # The message the draft answers (shortcut, command); None for a reply to a thread.
    replies_to: str | None = None
    revision: int = 0
    # Extra lines under the draft (mrkdwn, already escaped), e.g. the link to connect one's account.
    notes: tuple[str, ...] = ()


def card_message(draft: CardDraft) -> DraftMessage:
    """The card: header, the draft across sections of at most 3,000 chars, notes, and the six buttons.

    One message, so it can be replaced in place; a draft too long for one message shows its start and says so
    (Copy and Send use the whole text). The blocks are plain dicts in the shapes slack_sdk's block models give
    (test_card_blocks parses every one back through them and compares); the buttons are built and validated by
    slack_sdk once, then only their value changes. Building each block through the models cost 0.17 ms a card.
    """
    pieces = split_text(draft.text, SECTION_MAX_CHARS) or [EMPTY_DRAFT_TEXT]
    shown: list[str] = []
    chars = 0
    for piece in pieces:
        piece_chars = len(escape_mrkdwn(piece))
        if len(shown) >= MESSAGE_MAX_BLOCKS - _CARD_FIXED_BLOCKS or chars + piece_chars > _CARD_TEXT_BUDGET:
            break
        shown.append(piece)
        chars += piece_chars
    header = f":memo: {DRAFT_HEADER}"
    if draft.replies_to is not None:
        header += f" · replying to “{escape_mrkdwn(_preview(draft.replies_to))}”"
    else:
        header += " · replying to the thread"
    if draft.revision:
        header += f" · revision {draft.revision}"
    blocks: list[BlockDict] = [_context([header])]
    if draft.offline:
        blocks.append(_section(f":warning: *{OFFLINE_DRAFT_LABEL}*"))
    blocks.extend(_section(escape_mrkdwn(piece)) for piece in shown)
    notes = [*draft.notes]
    if draft.cut_short:
        notes.append(f"_{CUT_SHORT_TEXT}_")
    if len(shown) < len(pieces):
        notes.append(f"_{TOO_LONG_FOR_CARD_TEXT}_")
    if notes:
        blocks.append(_context(notes))
    blocks.append(_buttons_for(draft.suggestion_id))
    label = f" {OFFLINE_DRAFT_LABEL}" if draft.offline else ""
    return DraftMessage(blocks=blocks, text=f"{DRAFT_HEADER}{label}: {escape_mrkdwn(_preview(pieces[0]))}")


def note_message(text: str) -> DraftMessage:
    """A short plain-words message that replaces a card ("Sent", "this draft is gone" ...); `text` is mrkdwn."""
    return DraftMessage(blocks=_dicts([SectionBlock(text=MarkdownTextObject(text=text))]), text=text)


def edit_view(suggestion_id: str, text: str, *, response_url: str | None) -> dict[str, Any]:
    """The Edit & send modal: the draft in editable inputs (Slack caps one at 3,000 chars, so long drafts take
    several, split at paragraph boundaries and joined again on submit)."""
    pieces = split_text(text, INPUT_MAX_CHARS) or [""]
    blocks: list[Block] = []
    for index, piece in enumerate(pieces[:VIEW_MAX_BLOCKS]):
        label = "Your reply" if len(pieces) == 1 else f"Your reply (part {index + 1} of {len(pieces)})"
        element = PlainTextInputElement(
            action_id=EDIT_INPUT, multiline=True, initial_value=piece, max_length=INPUT_MAX_CHARS
        )
        blocks.append(InputBlock(block_id=f"{EDIT_BLOCK_PREFIX}{index}", label=label, element=element))
    return _view(EDIT_VIEW, "Edit & send", blocks, submit="Send", metadata=_metadata(suggestion_id, response_url))


def refine_view(suggestion_id: str, *, response_url: str | None) -> dict[str, Any]:
    """The Refine modal: a preset (shorter, more formal, friendlier, more detail, translate) or free words."""
    options = [Option(value=key, text=PlainTextObject(text=label)) for key, (label, _) in PRESETS.items()]
    blocks: list[Block] = [
        InputBlock(
            block_id=PRESET_BLOCK,
            label="How should it change?",
            element=RadioButtonsElement(action_id=PRESET_INPUT, options=options),
            optional=True,
        ),
        InputBlock(
            block_id=LANGUAGE_BLOCK,
            label="Translate to (language)",
            element=PlainTextInputElement(action_id=LANGUAGE_INPUT, max_length=LANGUAGE_MAX_CHARS),
            optional=True,
        ),
        InputBlock(
            block_id=INSTRUCTION_BLOCK,
            label="Or say it in your words",
            element=PlainTextInputElement(
                action_id=INSTRUCTION_INPUT, multiline=True, max_length=INSTRUCTION_MAX_CHARS
            ),
            optional=True,
        ),
    ]
    metadata = _metadata(suggestion_id, response_url)
    return _view(REFINE_VIEW, "Refine the draft", blocks, submit="Refine", metadata=metadata)


def copy_view(text: str) -> dict[str, Any]:
    """The Copy modal: the draft as plain text (no mrkdwn rendering), so what is selected is what was drafted."""
    pieces = split_text(text, SECTION_MAX_CHARS) or [EMPTY_DRAFT_TEXT]
    blocks: list[Block] = [
        SectionBlock(text=PlainTextObject(text=piece, emoji=False)) for piece in pieces[:VIEW_MAX_BLOCKS]
    ]
    return _view(COPY_VIEW, "Copy the draft", blocks, submit=None, metadata="")


@dataclass(frozen=True, slots=True)
class CardMetadata:
    """What a modal carries back on submit: the suggestion and the card's response_url (to update it in place)."""

    suggestion_id: str
    response_url: str | None


def read_metadata(private_metadata: str) -> CardMetadata | None:
    """The modal's metadata, or None when it is not ours (then the submission is refused)."""
    try:
        value = json.loads(private_metadata)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("s"), str) or not value["s"]:
        return None
    url = value.get("u")
    return CardMetadata(value["s"], url if isinstance(url, str) and url else None)


def edited_text(state_values: Mapping[str, Any]) -> str:
    """The edited reply from an Edit modal's submitted state: its parts in order, joined by blank lines."""
    parts: list[tuple[int, str]] = []
    for block_id, actions in state_values.items():
        if not block_id.startswith(EDIT_BLOCK_PREFIX) or not block_id[len(EDIT_BLOCK_PREFIX) :].isdigit():
            continue
        value = _input_value(actions, EDIT_INPUT)
        if value.strip():
            parts.append((int(block_id[len(EDIT_BLOCK_PREFIX) :]), value.strip()))
    return "\n\n".join(value for _, value in sorted(parts))


def refine_instruction(state_values: Mapping[str, Any]) -> tuple[str | None, dict[str, str]]:
    """(the instruction for the model, {} ) or (None, {block_id: what to fix}) from a Refine modal's state."""
    preset_state = _mapping(_mapping(state_values.get(PRESET_BLOCK)).get(PRESET_INPUT))
    preset = _mapping(preset_state.get("selected_option")).get("value")
    language = _input_value(state_values.get(LANGUAGE_BLOCK), LANGUAGE_INPUT).strip()
    words = _input_value(state_values.get(INSTRUCTION_BLOCK), INSTRUCTION_INPUT).strip()
    asks: list[str] = []
    if isinstance(preset, str) and preset in PRESETS:
        if preset == TRANSLATE and not language:
            return None, {LANGUAGE_BLOCK: "Say which language to translate it into."}
        asks.append(PRESETS[preset][1].format(language=language))
    elif language:
        asks.append(PRESETS[TRANSLATE][1].format(language=language))
    if words:
        asks.append(words)
    if not asks:
        return None, {INSTRUCTION_BLOCK: "Pick a change above or say in a few words how the draft should change."}
    return " ".join(asks), {}


def _section(mrkdwn: str) -> BlockDict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def _context(mrkdwn: Sequence[str]) -> BlockDict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text} for text in mrkdwn]}


def _buttons_for(suggestion_id: str) -> BlockDict:
    """The six buttons, each carrying `suggestion_id` as its value: slack_sdk's block, built once and copied."""
    template = _buttons_template()
    elements = [{**element, "text": dict(element["text"]), "value": suggestion_id} for element in template["elements"]]
    return {**template, "elements": elements}


@functools.cache
def _buttons_template() -> BlockDict:
    """The six buttons as slack_sdk builds and validates them, with an empty value for `_buttons_for` to fill."""

    def button(label: str, action_id: str, style: str | None = None) -> ButtonElement:
        return ButtonElement(text=label, action_id=action_id, value="", style=style)

    return ActionsBlock(
        block_id="card_actions",
        elements=[
            button("Send as me", SEND, "primary"),
            button("Edit & send", EDIT),
            button("Refine", REFINE),
            button("Regenerate", REGENERATE),
            button("Copy", COPY),
            button("Dismiss", DISMISS),
        ],
    ).to_dict()


def _view(
    callback_id: str, title: str, blocks: Sequence[Block], *, submit: str | None, metadata: str
) -> dict[str, Any]:
    if len(metadata) > PRIVATE_METADATA_MAX_CHARS:
        raise ValueError("private_metadata is longer than Slack allows")
    view = View(
        type="modal",
        callback_id=callback_id,
        title=PlainTextObject(text=title[:VIEW_TITLE_MAX_CHARS]),
        submit=PlainTextObject(text=submit) if submit else None,
        close=PlainTextObject(text="Close" if submit else "Done"),
        blocks=list(blocks),
        private_metadata=metadata or None,
    )
    return view.to_dict()


def _metadata(suggestion_id: str, response_url: str | None) -> str:
    return json.dumps({"s": suggestion_id, "u": response_url}, separators=(",", ":"))


def _dicts(blocks: Sequence[Block]) -> list[BlockDict]:
    # to_dict() runs slack_sdk's validation (text lengths, element counts) and raises SlackObjectFormationError.
    return [block.to_dict() for block in blocks]


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _REPLIES_TO_PREVIEW_CHARS:
        return flat
    cut = flat[:_REPLIES_TO_PREVIEW_CHARS]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "..."


def _input_value(actions: object, action_id: str) -> str:
    value = _mapping(_mapping(actions).get(action_id)).get("value")
    return value if isinstance(value, str) else ""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
