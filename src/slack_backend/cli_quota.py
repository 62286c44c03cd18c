"""`slack-backend quota ...`: show and change each workspace's daily AI token quota."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    # The database's modules load when a command here runs, not at every start of the command line.
    from slack_backend.config import Settings
    from slack_backend.store import AuditLog, QuotaStore

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
# Lower-case metavars, as the arguments were always named: scripts may match "Missing argument 'tokens'.".
workspace_argument = click.argument("workspace", metavar="workspace", help="The Slack team id, like T0123ABCD.")


def register(app: click.Group, settings_or_exit: Callable[[], Settings]) -> None:
    """Add the `quota` command group to the root app."""

    @app.group("quota")
    def quota_app() -> None:
        """Daily AI token quotas per workspace (0 = no quota)."""

    def run(work: Callable[[QuotaStore, AuditLog], Awaitable[T]]) -> T:
        from sqlalchemy.exc import SQLAlchemyError

        from slack_backend.store import AuditLog, QuotaStore, create_engine, create_tables

        settings = settings_or_exit()

        async def go() -> T:
            engine = create_engine(settings.database_url)
            try:
                await create_tables(engine)
                return await work(QuotaStore(engine), AuditLog(engine))
            finally:
                await engine.dispose()

        try:
            return asyncio.run(go())
        except (SQLAlchemyError, OSError) as exc:
            click.echo(f"cannot use the database: {type(exc).__name__}: {exc}", err=True)
            raise click.exceptions.Exit(1) from None

    @quota_app.command("set")
    @workspace_argument
    @click.argument("tokens", metavar="tokens", type=click.IntRange(min=0), help="Tokens per UTC day; 0 = no quota.")
    @json_option
    def set_quota(workspace: str, tokens: int, as_json: bool) -> None:
        """Give a workspace its own daily quota."""
        run(lambda quotas, _audit: quotas.set_daily_tokens(workspace, tokens))
        _say(as_json, {"workspace": workspace, "daily_tokens": tokens}, f"{workspace}: {tokens:,} tokens a day")

    @quota_app.command("unset")
    @workspace_argument
    @json_option
    def unset_quota(workspace: str, as_json: bool) -> None:
        """Remove a workspace's own quota: it falls back to WORKSPACE_DAILY_TOKEN_QUOTA."""
        run(lambda quotas, _audit: quotas.set_daily_tokens(workspace, None))
        _say(as_json, {"workspace": workspace, "daily_tokens": None}, f"{workspace}: back to the default quota")

    @quota_app.command("show")
    @click.argument(
        "workspace", required=False, metavar="[workspace]", help="One workspace; all overrides when left out."
    )
    @json_option
    def show_quota(workspace: str | None, as_json: bool) -> None:
        """Show the default, each override, and what each workspace used today (UTC)."""
        default = settings_or_exit().workspace_daily_token_quota

        async def collect(quotas: QuotaStore, audit: AuditLog) -> list[dict[str, Any]]:
            overrides = await quotas.overrides()
            names = [workspace] if workspace else sorted(overrides)
            since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            rows = []
            for name in names:
                rows.append(
                    {
                        "workspace": name,
                        "daily_tokens": overrides.get(name, default),
                        "override": name in overrides,
                        "used_today": await audit.tokens_used(name, since=since),
                    }
                )
            return rows

        rows = run(collect)
        if as_json:
            click.echo(json.dumps({"default_daily_tokens": default, "workspaces": rows}, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("workspace", "daily tokens", "own quota", "used today", title=f"default: {default:,} (0 = none)")
        for row in rows:
            table.add_row(row["workspace"], f"{row['daily_tokens']:,}", str(row["override"]), f"{row['used_today']:,}")
        Console(highlight=False).print(table)


def _say(as_json: bool, doc: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(doc) if as_json else text)
