"""Users' preferences, watched conversations and their threads, open passive suggestions, style examples.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)
_ID = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "user_preferences",
        sa.Column("workspace_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("tone", sa.String(16), nullable=True),
        sa.Column("length", sa.String(16), nullable=True),
        sa.Column("language", sa.String(40), nullable=True),
        sa.Column("custom_instructions", sa.Text(), nullable=True),
        sa.Column("signature", sa.String(100), nullable=True),
        sa.Column("learn_from_messages", sa.Boolean(), nullable=False),
        sa.Column("quiet_start_hour", sa.Integer(), nullable=True),
        sa.Column("quiet_end_hour", sa.Integer(), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=True),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "user_id", name=op.f("pk_user_preferences")),
        sa.CheckConstraint(
            "quiet_start_hour IS NULL OR (quiet_start_hour >= 0 AND quiet_start_hour < 24)",
            name=op.f("ck_user_preferences_start"),
        ),
        sa.CheckConstraint(
            "quiet_end_hour IS NULL OR (quiet_end_hour >= 0 AND quiet_end_hour < 24)",
            name=op.f("ck_user_preferences_end"),
        ),
    )
    op.create_table(
        "watched_conversations",
        sa.Column("workspace_id", _ID, nullable=False),
        sa.Column("channel_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "channel_id", "user_id", name=op.f("pk_watched_conversations")),
    )
    op.create_index(
        op.f("ix_watched_conversations_workspace_id_user_id"), "watched_conversations", ["workspace_id", "user_id"]
    )
    op.create_table(
        "watched_threads",
        sa.Column("workspace_id", _ID, nullable=False),
        sa.Column("channel_id", _ID, nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("seen_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "channel_id", "thread_ts", "user_id", name=op.f("pk_watched_threads")),
    )
    op.create_table(
        "open_passive_suggestions",
        sa.Column("workspace_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("channel_id", _ID, nullable=False),
        sa.Column("thread_key", sa.String(32), nullable=False),
        sa.Column("opened_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint(
            "workspace_id", "user_id", "channel_id", "thread_key", name=op.f("pk_open_passive_suggestions")
        ),
    )
    op.create_table(
        "style_examples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("workspace_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_ts", sa.String(32), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_style_examples")),
    )
    op.create_index(
        op.f("ix_style_examples_workspace_id_user_id_source_ts"),
        "style_examples",
        ["workspace_id", "user_id", "source_ts"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_style_examples_workspace_id_user_id_source_ts"), table_name="style_examples")
    op.drop_table("style_examples")
    op.drop_table("open_passive_suggestions")
    op.drop_table("watched_threads")
    op.drop_index(op.f("ix_watched_conversations_workspace_id_user_id"), table_name="watched_conversations")
    op.drop_table("watched_conversations")
    op.drop_table("user_preferences")
