"""Slack out: delivery, bot tokens, error classification, Block Kit drafts, thread reading; no Redis, no ingress."""

from typing import TYPE_CHECKING

from slack_backend.queue._lazy import lazy_exports

if TYPE_CHECKING:
    from slack_backend.slack.context import read_thread
    from slack_backend.slack.delivery import (
        RESPONSE_URL_MAX_USES,
        DeliveryLedger,
        DeliveryReceipt,
        InMemoryDeliveryLedger,
        SlackDelivery,
    )
    from slack_backend.slack.errors import (
        AppNotInstalledError,
        ResponseUrlError,
        SlackRejectedError,
        classify_slack_error,
        user_facing_reason,
    )
    from slack_backend.slack.messages import (
        DRAFT_HEADER,
        OFFLINE_DRAFT_LABEL,
        DraftMessage,
        draft_blocks,
        draft_messages,
        escape_mrkdwn,
        failure_text,
        progress_text,
    )
    from slack_backend.slack.tokens import InstallationStoreTokenSource, StaticTokenSource, TokenSource

# Each name loads its module on first use (PEP 562): the command line's light commands and the settings import a
# submodule without paying for the whole package (docs/performance.md, "Start-up").
_MODULES: dict[str, tuple[str, ...]] = {
    "slack_backend.slack.context": ("read_thread",),
    "slack_backend.slack.delivery": (
        "RESPONSE_URL_MAX_USES",
        "DeliveryLedger",
        "DeliveryReceipt",
        "InMemoryDeliveryLedger",
        "SlackDelivery",
    ),
    "slack_backend.slack.errors": (
        "AppNotInstalledError",
        "ResponseUrlError",
        "SlackRejectedError",
        "classify_slack_error",
        "user_facing_reason",
    ),
    "slack_backend.slack.messages": (
        "DRAFT_HEADER",
        "OFFLINE_DRAFT_LABEL",
        "DraftMessage",
        "draft_blocks",
        "draft_messages",
        "escape_mrkdwn",
        "failure_text",
        "progress_text",
    ),
    "slack_backend.slack.tokens": ("InstallationStoreTokenSource", "StaticTokenSource", "TokenSource"),
}

__all__ = [
    "DRAFT_HEADER",
    "OFFLINE_DRAFT_LABEL",
    "RESPONSE_URL_MAX_USES",
    "AppNotInstalledError",
    "DeliveryLedger",
    "DeliveryReceipt",
    "DraftMessage",
    "InMemoryDeliveryLedger",
    "InstallationStoreTokenSource",
    "ResponseUrlError",
    "SlackDelivery",
    "SlackRejectedError",
    "StaticTokenSource",
    "TokenSource",
    "classify_slack_error",
    "draft_blocks",
    "draft_messages",
    "escape_mrkdwn",
    "failure_text",
    "progress_text",
    "read_thread",
    "user_facing_reason",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)
