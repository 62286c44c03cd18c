"""Sign a request body the way Slack does (v0 HMAC-SHA256), for tests and the CLI's `try` command."""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
SIGNATURE_VERSION = "v0"


def sign_request(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Return the two headers Slack adds to a request: its timestamp and its v0 signature.

    Args:
        signing_secret: the app's signing secret (Basic Information > App Credentials).
        body: the exact bytes that will be sent; the signature covers them byte for byte.
        timestamp: epoch seconds to sign with; now when None. Receivers reject one more than 5 minutes off.

    Returns:
        `{"X-Slack-Request-Timestamp": ..., "X-Slack-Signature": "v0=<hex>"}`.
    """
    timestamp_s = int(time.time()) if timestamp is None else timestamp
    base = f"{SIGNATURE_VERSION}:{timestamp_s}:".encode() + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: str(timestamp_s), SIGNATURE_HEADER: f"{SIGNATURE_VERSION}={digest}"}
