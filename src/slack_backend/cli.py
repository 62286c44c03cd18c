"""The `slack-backend` command line: the root group, shared helpers, and the config and version commands."""

from __future__ import annotations

import gc
import importlib
import sys
from typing import TYPE_CHECKING

import click

from slack_backend import __version__

if TYPE_CHECKING:
    from slack_backend.config import Settings

# Start-up: a command imports what it uses when it runs (settings, Redis, rich, the store, the web app, anthropic),
# so `version`, `check-config` and `jobs counts` start in a fraction of a second; tests/test_cli_startup.py
# checks which modules the light commands load. The command line is plain click: typer built a pydantic
# TypeAdapter per option and imported pydantic at every start (docs/performance.md, "Start-up").

# The commands defined in other modules, each loaded when its command is named (or when the root's help lists
# them), so `version` loads none of them. A module's `register(app, settings_or_exit)` adds every command it lists
# here; the order is the root's help's.
LAZY_COMMANDS = {
    "run": "cli_service",
    "serve": "cli_service",
    "worker": "cli_service",
    "try": "cli_try",
    "jobs": "cli_jobs",
    "quota": "cli_quota",
    "db": "cli_store",
    "tokens": "cli_store",
}


# The commands that run until stopped. The others end within seconds to minutes, and run with the cyclic garbage
# collector off (main()): what they allocate is modules and classes that live as long as the process, and
# collecting while importing them was 4.5% of the start of `jobs counts` (docs/performance.md, round 21).
SERVICE_COMMANDS = frozenset({"run", "serve", "worker", "try"})


class Group(click.Group):
    """A click group that behaves as typer's did: commands listed in the order added, each with its first paragraph
    in full, and with no command given, the help on stdout and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # click's own no_args_is_help prints the help to stderr; typer printed it to stdout. Both exit 2.
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                # The first paragraph whole: click's short help ends at the first full stop ("e.g.") or a line.
                first = command.short_help or (command.help or "").partition("\n\n")[0]
                rows.append((name, " ".join(first.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _Root(Group):
    """The root group: loads the module of a command in LAZY_COMMANDS when the command is first asked for."""

    group_class = Group

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SERVICE_COMMANDS:
            gc.enable()
        module = LAZY_COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"slack_backend.{module}").register(self, settings_or_exit)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*(name for name in self.commands if name not in LAZY_COMMANDS), *LAZY_COMMANDS]


app = _Root(
    name="slack-backend",
    help="Slack requests in, AI-drafted replies out, on a rate-limited Redis job engine.",
    # Every option's default in its help, as typer showed them.
    context_settings={"show_default": True},
)


def settings_or_exit() -> Settings:
    """Load the settings for a command; on invalid settings print every problem to stderr and exit with 2."""
    from slack_backend.config import CONFIG_ERROR_EXIT_CODE, ConfigError, format_config_error, load_settings

    try:
        return load_settings()
    except ConfigError as err:
        click.echo(format_config_error(err), err=True)
        raise click.exceptions.Exit(CONFIG_ERROR_EXIT_CODE) from None


@app.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as one JSON object.")
def check_config(as_json: bool) -> None:
    """Validate the settings from the environment and print them, secrets masked."""
    settings = settings_or_exit()
    shown = {**settings.masked(), **_redis_server_rows(settings)}
    if as_json:
        import json

        click.echo(json.dumps(shown, indent=2))
        return
    # A plain-text table, not rich's: its import alone was a tenth of this command's start.
    from slack_backend._text_table import text_table

    click.echo(text_table(("setting", "value"), list(shown.items()), title="slack-backend settings"))


def _redis_server_rows(settings: Settings) -> dict[str, str]:
    """How the configured Redis evicts and persists, as extra rows; `unknown` where it cannot be asked."""
    import asyncio

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


@app.command("version")
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@app.command("manifest")
@click.option("--url", required=True, help="The service's public https address, like https://drafts.example.com")
@click.option("--name", default="Draft Reply", help="The app's name in Slack.")
def manifest(url: str, name: str) -> None:
    """Print the Slack app manifest (JSON) to paste into "Create New App > From a manifest"; see docs/slack-setup.md."""
    import json

    from slack_backend.web.manifest import build_manifest, manifest_problem

    problem = manifest_problem(url)
    if problem is not None:
        click.echo(problem, err=True)
        raise click.exceptions.Exit(2)
    settings = settings_or_exit()
    click.echo(json.dumps(build_manifest(url, slash_command=settings.slack_slash_command, app_name=name), indent=2))


@app.command(
    "bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Run the benchmark suite of a source checkout (`python -m bench`); options pass through, e.g. --quick."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__main__.py").is_file():
        click.echo("slack-backend bench: the benchmark suite (bench/) comes with the source checkout only", err=True)
        raise click.exceptions.Exit(2)
    raise click.exceptions.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], cwd=root))


def main() -> None:
    """Run the command line (the `slack-backend` script)."""
    # Back on for a service command, when the root looks it up (SERVICE_COMMANDS).
    gc.disable()
    app(prog_name="slack-backend")


if __name__ == "__main__":
    main()
