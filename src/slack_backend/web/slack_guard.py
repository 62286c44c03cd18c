"""The edge check of a Slack request, before Bolt sees it: a valid v0 signature, then a body Bolt can parse.

Bolt parses the body before it verifies the signature, and a body whose Content-Type does not match its encoding
(or an empty timestamp header) makes it raise; here those become plain 4xx answers with a reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier

TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"


def refusal(body: bytes, headers: Mapping[str, str], signing_secret: str) -> tuple[int, str] | None:
    """(status, reason) when the request must be refused, else None. The signature is checked first."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not timestamp.isdigit() or not signature:
        return 401, "missing or malformed Slack signature headers"
    if not SignatureVerifier(signing_secret).is_valid(body=body, timestamp=timestamp, signature=signature):
        return 401, "invalid Slack signature, or a timestamp outside the 5-minute window"
    # The same choices as Bolt's parse_body, so what passes here is what Bolt will read.
    text = body.decode("utf-8")
    if not text:
        return None
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json" or text.startswith("{"):
        return _envelope_problem(text, "the body")
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in text:
        payload = form.get("payload")
        return None if payload is None else _envelope_problem(payload, "the payload field")
    # A form body (a slash command) is read as flat strings: none of them may stand where Bolt expects an object.
    return _shape_problem(form, "the form")


# Keys Bolt reads into before any listener runs, with the types Slack sends them as (null where Slack may).
_OBJECTS = ("message", "view", "container", "state")
_OBJECT_OR_ID = ("team", "user", "channel", "enterprise")


def _envelope_problem(text: str, what: str) -> tuple[int, str] | None:
    try:
        envelope = json.loads(text)
    except ValueError:
        return 400, f"{what} is not JSON"
    if not isinstance(envelope, dict):
        return 400, f"{what} is not a JSON object"
    return _shape_problem(envelope, what)


def _shape_problem(envelope: Mapping[str, object], what: str) -> tuple[int, str] | None:
    if "event" in envelope and not isinstance(envelope["event"], dict):
        return 400, f"{what}: 'event' must be an object"
    for key in _OBJECTS:
        if envelope.get(key) is not None and not isinstance(envelope[key], dict):
            return 400, f"{what}: {key!r} must be an object"
    for key in _OBJECT_OR_ID:
        if envelope.get(key) is not None and not isinstance(envelope[key], dict | str):
            return 400, f"{what}: {key!r} must be an object or an id"
    authorizations = envelope.get("authorizations", [])
    if not isinstance(authorizations, list) or not all(isinstance(a, dict) for a in authorizations):
        return 400, f"{what}: 'authorizations' must be a list of objects"
    return None
