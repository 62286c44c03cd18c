"""Which response_urls the app may post to: Slack's hook hosts over https, loopback only beside a loopback Slack.

A response_url arrives in a request body and the worker later POSTs the user's draft to it, so it is checked as
a URL (scheme and exact host), never as a string prefix: `http://localhost.evil.com` is not loopback.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# The hosts Slack gives response_urls on (commercial and GovSlack).
SLACK_HOOK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
MAX_RESPONSE_URL_CHARS = 2_000
_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_url(url: str) -> bool:
    """Whether `url` is http(s) to this machine (127.0.0.0/8, ::1 or localhost), with no user info."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or host is None or "@" in parts.netloc:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def response_url_problem(url: str, *, allow_loopback: bool) -> str | None:
    """Why the app must not post to `url`, or None when it may.

    Args:
        url: a response_url from a request or a job.
        allow_loopback: also accept loopback URLs (tests and the offline demo, when SLACK_API_URL is loopback).
    """
    if len(url) > MAX_RESPONSE_URL_CHARS:
        return "response_url is too long"
    if allow_loopback and is_loopback_url(url):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "response_url is not a URL"
    if parts.scheme != "https" or parts.hostname not in SLACK_HOOK_HOSTS or "@" in parts.netloc:
        hosts = " or ".join(sorted(SLACK_HOOK_HOSTS))
        return f"response_url must be an https URL on {hosts}"
    return None
