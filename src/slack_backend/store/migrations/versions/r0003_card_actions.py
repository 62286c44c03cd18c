"""The suggestion card's actions: what a draft answers (for Regenerate), sent-as-user and dismissed marks, and the
history of a draft's refinements (`suggestion_revisions`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("suggestions") as batch:
        batch.add_column(sa.Column("trigger", sa.String(32), nullable=True))
        batch.add_column(sa.Column("source_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("instruction", sa.Text(), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("sent_at", _UTC, nullable=True))
        batch.add_column(sa.Column("sent_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sent_ts", sa.String(32), nullable=True))
        batch.add_column(sa.Column("edited", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("dismissed_at", _UTC, nullable=True))
    op.create_table(
        "suggestion_revisions",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("suggestion_id", sa.String(255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=True),
        sa.Column("previous_text", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cut_short", sa.Boolean(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestion_revisions")),
        sa.ForeignKeyConstraint(["suggestion_id"], ["suggestions.id"], ondelete="CASCADE"),
        sa.CheckConstraint("kind IN ('refine', 'regenerate')", name=op.f("ck_suggestion_revisions_kind")),
    )
    op.create_index(
        op.f("ix_suggestion_revisions_suggestion_id_number"),
        "suggestion_revisions",
        ["suggestion_id", "number"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_suggestion_revisions_suggestion_id_number"), table_name="suggestion_revisions")
    op.drop_table("suggestion_revisions")
    with op.batch_alter_table("suggestions") as batch:
        for column in (
            "dismissed_at",
            "edited",
            "sent_ts",
            "sent_text",
            "sent_at",
            "revision",
            "instruction",
            "source_text",
            "trigger",
        ):
            batch.drop_column(column)
