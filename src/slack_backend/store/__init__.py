"""The database: installations (tokens encrypted), OAuth states, saved drafts, audit, quotas, users' preferences,
watches and style examples (SQLite or PostgreSQL)."""

# Importing every table module here declares all tables on `metadata` before `create_tables` can run.
from slack_backend.store.audit import AuditLog, AuditRow, AuditStatus, FinishedStatus
from slack_backend.store.crypto import TokenCipher, TokenKeyError
from slack_backend.store.db import create_engine, create_tables, metadata, ping
from slack_backend.store.installations import installation_store, oauth_state_store, reencrypt_tokens
from slack_backend.store.preferences import Preferences, PreferenceStore
from slack_backend.store.quotas import QuotaStore
from slack_backend.store.style_examples import StyleExampleStore
from slack_backend.store.suggestions import CardStart, DraftStart, Revision, SendClaim, Suggestion, SuggestionStore
from slack_backend.store.watches import WatchLimitError, WatchStore, thread_key

__all__ = [
    "AuditLog",
    "AuditRow",
    "AuditStatus",
    "CardStart",
    "DraftStart",
    "FinishedStatus",
    "PreferenceStore",
    "Preferences",
    "QuotaStore",
    "Revision",
    "SendClaim",
    "StyleExampleStore",
    "Suggestion",
    "SuggestionStore",
    "TokenCipher",
    "TokenKeyError",
    "WatchLimitError",
    "WatchStore",
    "create_engine",
    "create_tables",
    "installation_store",
    "metadata",
    "oauth_state_store",
    "ping",
    "reencrypt_tokens",
    "thread_key",
]
