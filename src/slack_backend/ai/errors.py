"""Map Anthropic SDK errors onto the engine's retry signals, and say in plain words what went wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import anthropic

from slack_backend.ai.ratelimit_headers import RateLimitSnapshot
from slack_backend.queue.errors import RetryAfter, UnrecoverableError

# A 429 that names no wait at all: long enough not to hammer the API, short enough not to stall the queue.
DEFAULT_RATE_LIMIT_DELAY_S = 5.0

# error.details.error_code values (SDK >= 2) that mean money, not traffic: waiting will not help.
_SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)
# Older SDKs and older API answers only say it in the message, so the wording is checked as well.
_SPEND_LIMIT_WORDS = ("spend limit", "spend_limit", "usage limit", "credit balance", "billing")


class AIFailure(StrEnum):
    """Why a call to the AI provider failed, in the categories the user and operator care about."""

    RATE_LIMITED = "rate_limited"
    SPEND_LIMIT = "spend_limit"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    EMPTY_REPLY = "empty_reply"
    REFUSAL = "refusal"
    UNKNOWN = "unknown"


class TransientAIError(Exception):
    """The AI call failed in a way that may pass: the engine retries it with backoff."""

    def __init__(self, reason: str, *, failure: AIFailure, status_code: int | None = None) -> None:
        self.reason = reason
        self.failure = failure
        self.status_code = status_code
        super().__init__(reason)


class AIRejectedError(UnrecoverableError):
    """The AI provider refused the call for a reason retrying cannot fix: the job fails now."""

    def __init__(self, reason: str, *, failure: AIFailure, status_code: int | None = None) -> None:
        self.reason = reason
        self.failure = failure
        self.status_code = status_code
        super().__init__(reason)


# Plain reasons for refusals, by HTTP status; they end up in the failed job and the operator's logs.
_REJECTED: dict[int, tuple[AIFailure, str]] = {
    400: (AIFailure.INVALID_REQUEST, "the AI provider rejected the request as invalid"),
    401: (AIFailure.AUTHENTICATION, "the AI provider rejected the API key (check ANTHROPIC_API_KEY)"),
    402: (AIFailure.SPEND_LIMIT, "the AI provider account needs payment before it can be used"),
    403: (AIFailure.PERMISSION, "the API key is not allowed to use this model or feature"),
    404: (AIFailure.NOT_FOUND, "the AI provider does not know the model or endpoint (check ANTHROPIC_MODEL)"),
    413: (AIFailure.TOO_LARGE, "the request was too large for the AI provider"),
    422: (AIFailure.INVALID_REQUEST, "the AI provider could not process the request"),
}

_USER_MESSAGES: dict[AIFailure, str] = {
    AIFailure.SPEND_LIMIT: (
        "Sorry, I couldn't draft a reply: the AI service's spending limit has been reached. "
        "Please let your Slack admin know."
    ),
    AIFailure.AUTHENTICATION: (
        "Sorry, I couldn't draft a reply: the app's AI service key isn't working. Please let your Slack admin know."
    ),
    AIFailure.PERMISSION: (
        "Sorry, I couldn't draft a reply: the app isn't allowed to use its AI model. Please let your Slack admin know."
    ),
    AIFailure.NOT_FOUND: (
        "Sorry, I couldn't draft a reply: the app's AI model setting is wrong. Please let your Slack admin know."
    ),
    AIFailure.INVALID_REQUEST: (
        "Sorry, I couldn't draft a reply to this message: the AI service refused it. "
        "Try again, perhaps on a shorter message."
    ),
    AIFailure.TOO_LARGE: (
        "Sorry, I couldn't draft a reply: this conversation is too long for the AI service. "
        "Try again on a shorter thread."
    ),
    AIFailure.REFUSAL: "Sorry, the AI declined to draft a reply to this message, so there is no draft this time.",
    AIFailure.EMPTY_REPLY: (
        "Sorry, the AI returned an empty draft for this message. Try asking again with a little more to go on."
    ),
}
_BUSY_MESSAGE = (
    "Sorry, I couldn't draft a reply: the AI service is busy or unreachable right now. "
    "Please try again in a few minutes."
)
_UNKNOWN_MESSAGE = "Sorry, something went wrong while drafting your reply. Please try again."
_BUSY_FAILURES = frozenset(
    {
        AIFailure.RATE_LIMITED,
        AIFailure.OVERLOADED,
        AIFailure.SERVER_ERROR,
        AIFailure.TIMEOUT,
        AIFailure.CONNECTION,
    }
)


def unreadable_reply(status_code: int | None) -> TransientAIError:
    """An answer that is not the shape the API promises (a proxy's page, a cut-off body): another try may get it
    whole. The SDK's response check and our own reading of a reply (ai/reply.py) both end here."""
    return TransientAIError(
        "the AI provider sent an answer we could not read", failure=AIFailure.UNKNOWN, status_code=status_code
    )


def classify(exc: BaseException, *, now: datetime | None = None) -> BaseException:
    """Turn an Anthropic SDK error into what the engine acts on.

    Returns:
        `RetryAfter(hold_queue=True)` for a rate-limit 429; `AIRejectedError` (an `UnrecoverableError`) for
        a spend limit and for 400/401/402/403/404/413/422; `TransientAIError` for 529, 5xx, 408/409,
        timeouts and connection errors. The engine's own signals and non-Anthropic exceptions come back
        unchanged.
    """
    if isinstance(exc, RetryAfter | UnrecoverableError | TransientAIError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        return _classify_status(exc, now or datetime.now(UTC))
    # APITimeoutError subclasses APIConnectionError, so it is checked first.
    if isinstance(exc, anthropic.APITimeoutError):
        return TransientAIError("the AI provider did not answer within the timeout", failure=AIFailure.TIMEOUT)
    if isinstance(exc, anthropic.APIConnectionError):
        return TransientAIError("could not connect to the AI provider", failure=AIFailure.CONNECTION)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return unreadable_reply(exc.status_code)
    if isinstance(exc, anthropic.AnthropicError):
        return TransientAIError(f"the AI client failed: {exc}", failure=AIFailure.UNKNOWN)
    return exc


def failure_of(exc: BaseException) -> AIFailure:
    """The failure category of any exception classify() understands (UNKNOWN for the rest)."""
    classified = classify(exc)
    if isinstance(classified, RetryAfter):
        return AIFailure.RATE_LIMITED
    if isinstance(classified, TransientAIError | AIRejectedError):
        return classified.failure
    return AIFailure.UNKNOWN


def user_message(exc: BaseException) -> str:
    """Plain words to tell the Slack user when their draft finally failed because of `exc`."""
    failure = failure_of(exc)
    if failure in _BUSY_FAILURES:
        return _BUSY_MESSAGE
    return _USER_MESSAGES.get(failure, _UNKNOWN_MESSAGE)


def _classify_status(exc: anthropic.APIStatusError, now: datetime) -> BaseException:
    status = exc.status_code
    detail = _api_message(exc)
    if _is_spend_limit(exc):
        reason = f"the AI provider's spend limit has been reached ({status})"
        return AIRejectedError(
            f"{reason}: {detail}" if detail else reason, failure=AIFailure.SPEND_LIMIT, status_code=status
        )
    if status == 429:
        snapshot = RateLimitSnapshot.from_headers(exc.response.headers, now=now)
        delay_s = _rate_limit_delay_s(snapshot, now)
        return RetryAfter(
            delay_s,
            hold_queue=True,
            reason=f"the AI provider is rate limiting us (429); holding new starts for {delay_s:.1f} s",
        )
    if status == 529:
        return TransientAIError("the AI provider is overloaded (529)", failure=AIFailure.OVERLOADED, status_code=status)
    if status >= 500:
        return TransientAIError(
            f"the AI provider had a server error ({status})",
            failure=AIFailure.SERVER_ERROR,
            status_code=status,
        )
    if status in (408, 409):
        # The SDK's own policy retries these too: a request timeout or a conflict may pass on a second try.
        return TransientAIError(
            f"the AI provider asked us to try again ({status})",
            failure=AIFailure.SERVER_ERROR,
            status_code=status,
        )
    failure, reason = _REJECTED.get(
        status, (AIFailure.INVALID_REQUEST, f"the AI provider refused the request ({status})")
    )
    return AIRejectedError(f"{reason}: {detail}" if detail else reason, failure=failure, status_code=status)


def _rate_limit_delay_s(snapshot: RateLimitSnapshot, now: datetime) -> float:
    if snapshot.retry_after_s is not None and snapshot.retry_after_s > 0:
        return snapshot.retry_after_s
    hold_s = snapshot.hold_until_s(now)
    if hold_s is not None and hold_s > 0:
        return hold_s
    return DEFAULT_RATE_LIMIT_DELAY_S


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    if exc.status_code not in (400, 402, 403, 429):
        return False
    if _error_code(exc.body) in _SPEND_LIMIT_CODES:
        return True
    message = _api_message(exc).lower()
    return any(words in message for words in _SPEND_LIMIT_WORDS)


def _error_code(body: object) -> str | None:
    # Read from the body, not exc.error_code, so SDK versions without that attribute classify the same.
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    code = details.get("error_code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""
