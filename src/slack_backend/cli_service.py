"""CLI commands that run the service: `run` (web + worker), `serve` (web only) and `worker`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from slack_backend.config import Settings

T = TypeVar("T")

processes_option = click.option("--processes", "-p", type=click.IntRange(1, 64), help="Worker processes.")
demo_option = click.option(
    "--demo", is_flag=True, help="Offline demo: start without SLACK_SIGNING_SECRET (Slack's requests are refused)."
)
concurrency_option = click.option("--concurrency", "-c", type=click.IntRange(1, 1000), help="Jobs per process.")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the service on uvloop where it is installed (Linux, macOS), else on asyncio's own loop.

    uvloop cut the worker's CPU per job by about a fifth in docs/performance.md's measurements; the code is the same
    on either loop, so a platform without uvloop (Windows) runs unchanged.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def register(app: click.Group, settings_or_exit: Callable[[], Settings]) -> None:
    """Add the service commands to the root app."""

    def prepared(*, serving: bool = False, demo: bool = False) -> Settings:
        from slack_backend.config import CONFIG_ERROR_EXIT_CODE, ConfigError, format_config_error, serving_problems
        from slack_backend.logging import configure_logging

        settings = settings_or_exit()
        problems = serving_problems(settings, demo=demo) if serving else []
        if problems:
            click.echo(format_config_error(ConfigError(problems)), err=True)
            raise click.exceptions.Exit(CONFIG_ERROR_EXIT_CODE)
        configure_logging(settings.log_level, settings.log_format)
        return settings

    @app.command("run")
    @concurrency_option
    @demo_option
    def run(concurrency: int | None, demo: bool) -> None:
        """Run the web app and a worker in one process (what `make run` starts)."""
        from slack_backend.app import run_service

        run_event_loop(run_service(prepared(serving=True, demo=demo), web=True, worker=True, concurrency=concurrency))

    @app.command("serve")
    @demo_option
    def serve(demo: bool) -> None:
        """Run the web app only (Slack ingress, health, metrics, dashboard)."""
        from slack_backend.app import run_service

        run_event_loop(run_service(prepared(serving=True, demo=demo), web=True, worker=False))

    @app.command("worker")
    @processes_option
    @concurrency_option
    def worker(processes: int | None, concurrency: int | None) -> None:
        """Run ai-responses workers: SIGTERM finishes running jobs (up to SHUTDOWN_TIMEOUT_S) and exits 0."""
        from slack_backend.app import run_service, supervise_workers

        settings = prepared()
        count = processes or settings.worker_processes
        if count == 1:
            run_event_loop(run_service(settings, web=False, worker=True, concurrency=concurrency))
            return
        try:
            code = supervise_workers(count, concurrency, settings.worker_metrics_port)
        except ValueError as exc:
            click.echo(str(exc), err=True)
            raise click.exceptions.Exit(2) from None
        raise click.exceptions.Exit(code)
