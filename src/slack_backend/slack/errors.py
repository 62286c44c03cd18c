"""Map Slack API and response_url failures onto the engine's retry signals, and say what went wrong in plain words."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from slack_sdk.errors import SlackApiError

from slack_backend.queue.errors import RetryAfter, UnrecoverableError

# Slack always sends Retry-After with a 429; this only covers a proxy or fake that leaves it out.
DEFAULT_RETRY_AFTER_S = 1.0

# Plain reasons for Slack's permanent refusals, by error code: retrying cannot fix any of them.
_REJECTED: dict[str, str] = {
    "invalid_auth": "Slack rejected the app's token (invalid_auth)",
    "not_authed": "no Slack token was sent (not_authed)",
    "account_inactive": "the app's Slack token belongs to a deactivated account (account_inactive)",
    "token_revoked": "the app's Slack token was revoked (token_revoked)",
    "token_expired": "the app's Slack token has expired (token_expired)",
    "channel_not_found": "the app cannot see the channel (channel_not_found)",
    "not_in_channel": "the app is not a member of the channel (not_in_channel)",
    "user_not_in_channel": "the user is not a member of the channel (user_not_in_channel)",
    "is_archived": "the channel is archived (is_archived)",
    "msg_too_long": "the message is too long for Slack (msg_too_long)",
    "msg_blocks_too_long": "the message blocks are too long for Slack (msg_blocks_too_long)",
    "no_text": "the message had no text (no_text)",
    "invalid_blocks": "Slack refused the message layout (invalid_blocks)",
    "restricted_action": "the workspace does not allow the app to post there (restricted_action)",
    "missing_scope": "the app lacks a permission scope it needs (missing_scope)",
    "not_allowed_token_type": "Slack lets bot tokens read threads only in DMs and group DMs (not_allowed_token_type)",
    "thread_not_found": "the thread no longer exists (thread_not_found)",
    "team_access_not_granted": "the app has no access to this workspace (team_access_not_granted)",
}

_REINSTALL = "the app's access to this workspace isn't working. Please ask a Slack admin to reinstall the app"
_USER_REASONS: dict[str, str] = {
    "invalid_auth": _REINSTALL,
    "not_authed": _REINSTALL,
    "account_inactive": _REINSTALL,
    "token_revoked": _REINSTALL,
    "token_expired": _REINSTALL,
    "team_access_not_granted": _REINSTALL,
    "missing_scope": "the app is missing a permission it needs. Please ask a Slack admin to reinstall the app",
    "not_allowed_token_type": (
        "Slack lets this app read threads only in DMs and group DMs. Use the *Draft a reply* shortcut on the message "
        "you want to answer instead"
    ),
    "channel_not_found": "the app can't see this channel. Invite it to the channel (/invite) and try again",
    "not_in_channel": "the app isn't a member of this channel. Invite it to the channel (/invite) and try again",
    "user_not_in_channel": "I can only show you a draft in a channel you are a member of",
    "is_archived": "this channel is archived",
    "restricted_action": "this workspace doesn't allow the app to post here",
    "msg_too_long": "the draft was too long to show in Slack",
    "msg_blocks_too_long": "the draft was too long to show in Slack",
    "no_text": "the draft came out empty",
    "invalid_blocks": "Slack couldn't display the draft",
    "thread_not_found": "the conversation could not be found any more; it may have been deleted",
}
_BUSY_REASON = "Slack is busy right now. Please try again in a few minutes"
_UNKNOWN_REASON = "something went wrong while drafting your reply. Please try again"


class SlackRejectedError(UnrecoverableError):
    """Slack refused a call for a reason retrying cannot fix (bad token, no access, bad message): fail now."""

    def __init__(self, reason: str, *, error: str, status_code: int | None = None) -> None:
        self.reason = reason
        self.error = error
        self.status_code = status_code
        super().__init__(reason)


class AppNotInstalledError(UnrecoverableError):
    """No bot token is known for the workspace: the app was never installed there, or was uninstalled."""

    def __init__(self) -> None:
        super().__init__("the app is not installed in this workspace")


class ResponseUrlError(Exception):
    """A response_url POST failed in a way that may pass (a 5xx): the engine retries it with backoff."""

    def __init__(self, status_code: int, error: str = "") -> None:
        self.status_code = status_code
        self.error = error
        # Never put the URL itself in the message: anyone holding it can post to the user.
        super().__init__(f"response_url answered HTTP {status_code}" + (f" ({error})" if error else ""))


def classify_slack_error(exc: BaseException) -> BaseException:
    """Turn a Slack failure into what the engine acts on.

    Returns:
        `RetryAfter(Retry-After seconds)` for an HTTP 429 (not holding the queue: Slack limits are per method and
        workspace); `SlackRejectedError` (an `UnrecoverableError`) for permanent error codes such as invalid_auth or
        channel_not_found; anything else unchanged, which the engine treats as transient: 5xx answers, unknown
        error codes, `aiohttp.ClientError`, `asyncio.TimeoutError` (the builtin TimeoutError), `OSError`.
    """
    if isinstance(exc, RetryAfter | UnrecoverableError):
        return exc
    if isinstance(exc, SlackApiError):
        status = _status_of(exc)
        error = _error_code(exc)
        if status == 429 or error == "ratelimited":
            return rate_limited(retry_after_s(_headers_of(exc)), what="Slack")
        if status is not None and status >= 500:
            return exc
        reason = _REJECTED.get(error)
        if reason is not None:
            return SlackRejectedError(reason, error=error, status_code=status)
        return exc
    # Connection trouble, timeouts and anything unknown may pass on their own: the engine retries what it gets back.
    return exc


def rate_limited(delay_s: float, *, what: str) -> RetryAfter:
    """The RetryAfter for a Slack 429: only this job waits, since Slack limits each method and workspace apart."""
    return RetryAfter(delay_s, hold_queue=False, reason=f"{what} is rate limiting us (429); retrying in {delay_s:g} s")


def rejected(error: str, *, status_code: int | None = None) -> SlackRejectedError | None:
    """The SlackRejectedError for a permanent Slack error code, or None when the code may pass on a retry."""
    reason = _REJECTED.get(error)
    return None if reason is None else SlackRejectedError(reason, error=error, status_code=status_code)


def retry_after_s(headers: Mapping[str, str] | None) -> float:
    """Seconds from a Retry-After header (any letter case); DEFAULT_RETRY_AFTER_S when absent or unreadable."""
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return DEFAULT_RETRY_AFTER_S
            return seconds if seconds >= 0 else DEFAULT_RETRY_AFTER_S
    return DEFAULT_RETRY_AFTER_S


def user_facing_reason(exc: BaseException) -> str:
    """A plain-words reason (no trailing full stop) to tell the Slack user why their draft failed because of `exc`.

    Pair it with `messages.failure_text`. Internal details (codes, URLs, tokens) never appear in it.
    """
    classified = classify_slack_error(exc)
    if isinstance(classified, AppNotInstalledError):
        return "the app is not installed in this workspace. Please ask a Slack admin to install it"
    if isinstance(classified, SlackRejectedError):
        return _USER_REASONS.get(classified.error, _UNKNOWN_REASON)
    if isinstance(classified, RetryAfter | ResponseUrlError):
        return _BUSY_REASON
    if isinstance(classified, SlackApiError) and (_status_of(classified) or 0) >= 500:
        return _BUSY_REASON
    if isinstance(classified, aiohttp.ClientError | TimeoutError | OSError):
        return _BUSY_REASON
    return _UNKNOWN_REASON


def _status_of(exc: SlackApiError) -> int | None:
    status = getattr(exc.response, "status_code", None)
    return status if isinstance(status, int) else None


def _headers_of(exc: SlackApiError) -> Mapping[str, str]:
    headers = getattr(exc.response, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def _error_code(exc: SlackApiError) -> str:
    response = exc.response
    data = getattr(response, "data", response)
    error = data.get("error") if isinstance(data, Mapping) else None
    return error if isinstance(error, str) else ""
