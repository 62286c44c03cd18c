"""`slack-backend quota ...`: show and change each workspace's daily AI token quota."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    # The database's modules load when a command here runs, not at every start of the command line.
    from slack_backend.config import Settings
    from slack_backend.store import AuditLog, QuotaStore

T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
Workspace = Annotated[str, typer.Argument(help="The Slack team id, like T0123ABCD.")]


def register(app: typer.Typer, settings_or_exit: Callable[[], Settings]) -> None:
    """Add the `quota` command group to the root app."""
    quota_app = typer.Typer(help="Daily AI token quotas per workspace (0 = no quota).", no_args_is_help=True)
    app.add_typer(quota_app, name="quota")

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
            typer.echo(f"cannot use the database: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(1) from None

    @quota_app.command("set")
    def set_quota(
        workspace: Workspace,
        tokens: Annotated[int, typer.Argument(min=0, help="Tokens per UTC day; 0 = no quota.")],
        as_json: AsJson = False,
    ) -> None:
        """Give a workspace its own daily quota."""
        run(lambda quotas, _audit: quotas.set_daily_tokens(workspace, tokens))
        _say(as_json, {"workspace": workspace, "daily_tokens": tokens}, f"{workspace}: {tokens:,} tokens a day")

    @quota_app.command("unset")
    def unset_quota(workspace: Workspace, as_json: AsJson = False) -> None:
        """Remove a workspace's own quota: it falls back to WORKSPACE_DAILY_TOKEN_QUOTA."""
        run(lambda quotas, _audit: quotas.set_daily_tokens(workspace, None))
        _say(as_json, {"workspace": workspace, "daily_tokens": None}, f"{workspace}: back to the default quota")

    @quota_app.command("show")
    def show_quota(
        workspace: Annotated[str | None, typer.Argument(help="One workspace; all overrides when left out.")] = None,
        as_json: AsJson = False,
    ) -> None:
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
            typer.echo(json.dumps({"default_daily_tokens": default, "workspaces": rows}, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("workspace", "daily tokens", "own quota", "used today", title=f"default: {default:,} (0 = none)")
        for row in rows:
            table.add_row(row["workspace"], f"{row['daily_tokens']:,}", str(row["override"]), f"{row['used_today']:,}")
        Console(highlight=False).print(table)


def _say(as_json: bool, doc: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(doc) if as_json else text)
