"""The database: Slack installations and OAuth states, the request audit and token quotas (SQLite or PostgreSQL)."""

# Importing every table module here declares all tables on `metadata` before `create_tables` can run.
from slack_backend.store.audit import AuditLog, AuditRow, AuditStatus, FinishedStatus
from slack_backend.store.db import create_engine, create_tables, metadata, ping
from slack_backend.store.installations import installation_store, oauth_state_store
from slack_backend.store.quotas import QuotaStore

__all__ = [
    "AuditLog",
    "AuditRow",
    "AuditStatus",
    "FinishedStatus",
    "QuotaStore",
    "create_engine",
    "create_tables",
    "installation_store",
    "metadata",
    "oauth_state_store",
    "ping",
]
