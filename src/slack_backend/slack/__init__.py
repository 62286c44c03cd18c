"""Slack out: delivery, bot tokens, error classification, Block Kit drafts, thread reading; no Redis, no ingress."""

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
