"""Alembic's environment: migrations always run on a connection handed in by `slack_backend.store.migrate`."""

from __future__ import annotations

from alembic import context

from slack_backend.store.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    # Offline SQL generation and alembic's own command line are not supported: `slack-backend db upgrade` is.
    raise RuntimeError("run migrations with `slack-backend db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
