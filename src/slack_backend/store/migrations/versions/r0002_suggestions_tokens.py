"""Saved drafts (`suggestions`), and token columns wide enough for encrypted tokens.

Revision ID: 0002
Revises: 0001

Tokens already stored in plaintext are encrypted by the first start (or `slack-backend db upgrade`) that has
TOKEN_ENCRYPTION_KEY, not here: a migration must run the same without the key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)
# Fernet output for a 200-character token is about 360 characters; see store/crypto.py.
_TOKEN = sa.String(1000)
_TOKEN_COLUMNS = {
    "slack_bots": ("bot_token", "bot_refresh_token"),
    "slack_installations": ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token"),
}


def upgrade() -> None:
    op.create_table(
        "suggestions",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=True),
        sa.Column("source_ts", sa.String(32), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cut_short", sa.Boolean(), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestions")),
        sa.CheckConstraint("status IN ('saved', 'delivered')", name=op.f("ck_suggestions_status")),
    )
    op.create_index(op.f("ix_suggestions_workspace_id_user_id"), "suggestions", ["workspace_id", "user_id"])
    for table, columns in _TOKEN_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=_TOKEN, existing_type=sa.String(200), existing_nullable=True)


def downgrade() -> None:
    # Encrypted tokens do not fit back into 200 characters: a downgrade keeps the wide columns.
    op.drop_index(op.f("ix_suggestions_workspace_id_user_id"), table_name="suggestions")
    op.drop_table("suggestions")
