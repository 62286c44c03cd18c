"""A Messages API reply read from its JSON body: its text, why it stopped, its token usage and its model.

The SDK's typed `Message` (`raw.parse()`) builds every block, the usage and their optional fields through its model
machinery: about 770,000 instructions a call, a fifth of the whole call, for the five values a draft uses
(docs/performance.md, round 13). The body is the same JSON either way; this reads only what the draft needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from slack_backend.ai.errors import unreadable_reply


@dataclass(frozen=True, slots=True)
class Reply:
    """The parts of one Messages reply a draft uses: the text blocks joined, unstripped."""

    text: str
    stop_reason: str | None
    input_tokens: int
    output_tokens: int
    model: str


def read_reply(body: bytes, *, status_code: int | None = None) -> Reply:
    """Read a successful Messages reply.

    Raises:
        TransientAIError: the body is not JSON or not a Messages reply (no content list, no usage counts): a
            proxy's page or a cut-off answer, which another attempt may get whole, as with the SDK's own check.
    """
    try:
        message = orjson.loads(body)
        return Reply(
            text="".join(_text_blocks(message["content"])),
            stop_reason=_optional_str(message.get("stop_reason")),
            input_tokens=_count(message["usage"]["input_tokens"]),
            output_tokens=_count(message["usage"]["output_tokens"]),
            model=str(message["model"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise unreadable_reply(status_code) from None


def _text_blocks(content: Any) -> list[str]:
    if not isinstance(content, list):
        raise TypeError("content is not a list")
    return [block["text"] for block in content if block.get("type") == "text" and isinstance(block["text"], str)]


def _count(value: Any) -> int:
    # bool is an int to Python, not a token count.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a token count is not a non-negative integer")
    return value


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("stop_reason is not a string")
    return value
