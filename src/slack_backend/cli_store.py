"""`slack-backend db ...` and `tokens ...`: apply schema migrations, and make or rotate the token encryption key."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    # The database's modules load when a command here runs, not at every start of the command line.
    from sqlalchemy.ext.asyncio import AsyncEngine

    from slack_backend.config import Settings

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _on_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from sqlalchemy.exc import SQLAlchemyError

    from slack_backend.logging import configure_logging
    from slack_backend.store import TokenKeyError, create_engine

    # Log lines go to stderr: stdout holds the command's answer (one JSON document with --json).
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)

    async def go() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except (SQLAlchemyError, OSError) as exc:
        # The exception's text can hold the URL, and with it a password: the class name says enough.
        click.echo(f"cannot use the database: {type(exc).__name__}", err=True)
        raise click.exceptions.Exit(1) from None
    except TokenKeyError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(1) from None


def _say(as_json: bool, doc: dict[str, Any], line: str) -> None:
    click.echo(json.dumps(doc) if as_json else line)


def register(app: click.Group, settings_or_exit: Callable[[], Settings]) -> None:
    """Add the `db` and `tokens` command groups to the root app."""

    @app.group("db")
    def db_app() -> None:
        """The database schema (migrations; `run` and `serve` apply them at start)."""

    @app.group("tokens")
    def tokens_app() -> None:
        """Slack tokens at rest: the encryption key (TOKEN_ENCRYPTION_KEY)."""

    @db_app.command("upgrade")
    @json_option
    def db_upgrade(as_json: bool) -> None:
        """Apply every migration not yet applied (and encrypt plaintext tokens when TOKEN_ENCRYPTION_KEY is set)."""
        from slack_backend.slack.tokens import token_cipher
        from slack_backend.store.migrate import upgrade

        settings = settings_or_exit()
        before, after = _on_database(settings, lambda engine: upgrade(engine, token_cipher(settings)))
        line = f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})")
        _say(as_json, {"before": before, "after": after}, line)

    @db_app.command("current")
    @json_option
    def db_current(as_json: bool) -> None:
        """Print the database's revision and the newest this version knows (exit 1 when behind)."""
        from slack_backend.store.migrate import current_revision, head_revision

        current = _on_database(settings_or_exit(), current_revision)
        head = head_revision()
        _say(as_json, {"current": current, "head": head}, f"database at revision {current or 'none'}, newest {head}")
        if current != head:
            raise click.exceptions.Exit(1)

    @tokens_app.command("new-key")
    def new_key() -> None:
        """Print a fresh key for TOKEN_ENCRYPTION_KEY (put it first in the list to start using it)."""
        from slack_backend.store.crypto import TokenCipher

        click.echo(TokenCipher.new_key())

    @tokens_app.command("rotate-key")
    @json_option
    def rotate_key(as_json: bool) -> None:
        """Re-encrypt every stored token with the first key of TOKEN_ENCRYPTION_KEY; then older keys can go."""
        from slack_backend.slack.tokens import token_cipher
        from slack_backend.store import reencrypt_tokens
        from slack_backend.store.migrate import upgrade

        settings = settings_or_exit()
        cipher = token_cipher(settings)
        if cipher is None:
            click.echo("TOKEN_ENCRYPTION_KEY is not set: there is no key to rotate to", err=True)
            raise click.exceptions.Exit(2)

        async def work(engine: AsyncEngine) -> int:
            await upgrade(engine)
            return await reencrypt_tokens(engine, cipher)

        count = _on_database(settings, work)
        _say(as_json, {"reencrypted": count}, f"{count} stored tokens re-encrypted with the current key")
