"""The edge check of a Slack request, before Bolt sees it: a valid v0 signature, then a body parsed our way.

The body is parsed here by content type and by key, and Bolt is handed the result: Bolt's own `parse_body` takes
any form body that merely contains the text "payload" (a slash command's text, channel or user name) for an
interactive payload and reads it as empty, so the request would be lost. A body whose shape Bolt cannot read (or
an empty timestamp header) becomes a plain 4xx answer with a reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier

TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: the HTTP status and a plain reason for the caller."""

    status: int
    reason: str


def read_slack_request(body: bytes, headers: Mapping[str, str], signing_secret: str) -> dict[str, Any] | Refusal:
    """The verified request's body as Bolt should see it, or why it is refused. The signature is checked first.

    JSON (by Content-Type, or a body starting with "{") is the Events API envelope; a form with a `payload` key is
    an interactive payload (shortcuts, actions, views); any other form (a slash command) is read as flat strings.
    """
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not timestamp.isdigit() or not signature:
        return Refusal(401, "missing or malformed Slack signature headers")
    if not SignatureVerifier(signing_secret).is_valid(body=body, timestamp=timestamp, signature=signature):
        return Refusal(401, "invalid Slack signature, or a timestamp outside the 5-minute window")
    text = body.decode("utf-8")
    if not text:
        return {}
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json" or text.startswith("{"):
        return _envelope(text, "the body")
    form = dict(parse_qsl(text, keep_blank_values=True))
    # By key, never by substring: "payload" inside a command's text is just text.
    if "payload" in form:
        return _envelope(form["payload"], "the payload field")
    # A form body (a slash command) is read as flat strings: none of them may stand where Bolt expects an object.
    problem = _shape_problem(form, "the form")
    return problem if problem is not None else dict(form)


# Keys Bolt reads into before any listener runs, with the types Slack sends them as (null where Slack may).
_OBJECTS = ("message", "view", "container", "state")
_OBJECT_OR_ID = ("team", "user", "channel", "enterprise")


def _envelope(text: str, what: str) -> dict[str, Any] | Refusal:
    try:
        envelope = json.loads(text)
    except ValueError:
        return Refusal(400, f"{what} is not JSON")
    if not isinstance(envelope, dict):
        return Refusal(400, f"{what} is not a JSON object")
    problem = _shape_problem(envelope, what)
    return problem if problem is not None else envelope


def _shape_problem(envelope: Mapping[str, object], what: str) -> Refusal | None:
    if "event" in envelope and not isinstance(envelope["event"], dict):
        return Refusal(400, f"{what}: 'event' must be an object")
    for key in _OBJECTS:
        if envelope.get(key) is not None and not isinstance(envelope[key], dict):
            return Refusal(400, f"{what}: {key!r} must be an object")
    for key in _OBJECT_OR_ID:
        if envelope.get(key) is not None and not isinstance(envelope[key], dict | str):
            return Refusal(400, f"{what}: {key!r} must be an object or an id")
    authorizations = envelope.get("authorizations", [])
    if not isinstance(authorizations, list) or not all(isinstance(a, dict) for a in authorizations):
        return Refusal(400, f"{what}: 'authorizations' must be a list of objects")
    return None
