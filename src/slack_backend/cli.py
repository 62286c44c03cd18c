"""The `slack-backend` command line: the root app, shared helpers, and the config and version commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from slack_backend import __version__, cli_jobs, cli_quota, cli_service, cli_store, cli_try

if TYPE_CHECKING:
    from slack_backend.config import Settings

# Start-up: a command imports what it uses when it runs (settings, Redis, rich, the store, the web app, anthropic),
# so `version`, `check-config` and `jobs counts` start in a fraction of a second; tests/test_cli_startup.py
# checks which modules the light commands load.

# Command groups live in their own modules and join with `app.add_typer(...)`.
app = typer.Typer(
    name="slack-backend",
    help="Slack requests in, AI-drafted replies out, on a rate-limited Redis job engine.",
    no_args_is_help=True,
    add_completion=False,
    # A crash report must not print local variables: settings and tokens live there.
    pretty_exceptions_show_locals=False,
)


# A root callback keeps `app` a command group even while it has few commands, so each is named on the line.
@app.callback()
def _root() -> None:
    pass


def settings_or_exit() -> Settings:
    """Load the settings for a command; on invalid settings print every problem to stderr and exit with 2."""
    from slack_backend.config import CONFIG_ERROR_EXIT_CODE, ConfigError, format_config_error, load_settings

    try:
        return load_settings()
    except ConfigError as err:
        typer.echo(format_config_error(err), err=True)
        raise typer.Exit(CONFIG_ERROR_EXIT_CODE) from None


@app.command("check-config")
def check_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print the settings as one JSON object.")] = False,
) -> None:
    """Validate the settings from the environment and print them, secrets masked."""
    settings = settings_or_exit()
    shown = {**settings.masked(), **_redis_server_rows(settings)}
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    # A plain-text table, not rich's: its import alone was a tenth of this command's start.
    from slack_backend._text_table import text_table

    typer.echo(text_table(("setting", "value"), list(shown.items()), title="slack-backend settings"))


def _redis_server_rows(settings: Settings) -> dict[str, str]:
    """How the configured Redis evicts and persists, as extra rows; `unknown` where it cannot be asked."""
    from redis.exceptions import RedisError

    from slack_backend.queue import create_redis
    from slack_backend.queue.connection import SAFETY_CHECK_TIMEOUT_S, ServerSafety, server_safety

    async def ask() -> ServerSafety:
        client = create_redis(settings.redis_target(), client_name="slack-backend-cli")
        try:
            async with asyncio.timeout(SAFETY_CHECK_TIMEOUT_S):
                return await server_safety(client)
        except TimeoutError:
            return ServerSafety(maxmemory_policy=None, aof=None, rdb_saves=None)
        finally:
            await client.aclose()

    try:
        safety = asyncio.run(ask())
    except (RedisError, OSError, ValueError):
        safety = ServerSafety(maxmemory_policy=None, aof=None, rdb_saves=None)
    rows = {f"(redis server) {name}": value for name, value in safety.describe().items()}
    rows["(redis server) warnings"] = "; ".join(safety.problems) or "none"
    return rows


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def manifest(
    url: Annotated[
        str, typer.Option("--url", help="The service's public https address, like https://drafts.example.com")
    ],
    name: Annotated[str, typer.Option("--name", help="The app's name in Slack.")] = "Draft Reply",
) -> None:
    """Print the Slack app manifest (JSON) to paste into "Create New App > From a manifest"; see docs/slack-setup.md."""
    from slack_backend.web.manifest import build_manifest, manifest_problem

    problem = manifest_problem(url)
    if problem is not None:
        typer.echo(problem, err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    typer.echo(json.dumps(build_manifest(url, slash_command=settings.slack_slash_command, app_name=name), indent=2))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite of a source checkout (`python -m bench`); options pass through, e.g. --quick."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__main__.py").is_file():
        typer.echo("slack-backend bench: the benchmark suite (bench/) comes with the source checkout only", err=True)
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], cwd=root))


cli_service.register(app, settings_or_exit)
cli_jobs.register(app, settings_or_exit)
cli_try.register(app, settings_or_exit)
cli_quota.register(app, settings_or_exit)
cli_store.register(app, settings_or_exit)


def main() -> None:
    """Run the command line (the `slack-backend` script)."""
    app(prog_name="slack-backend")


if __name__ == "__main__":
    main()
