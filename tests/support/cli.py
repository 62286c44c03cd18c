"""Run `slack-backend` commands through the click app in this process: no interpreter start-up per command."""

from __future__ import annotations

import subprocess
import traceback
from collections.abc import Mapping, Sequence

from click.testing import CliRunner

from slack_backend import cli
from slack_backend.config import setting_variables

# Every variable the settings read: unset for the run unless given, as in a process's own minimal environment.
SETTINGS_VARIABLES = setting_variables()


def run_in_process(args: Sequence[str], env: Mapping[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`slack-backend <args>` with `env` as its settings; the result as a real process would give it.

    An exception the CLI did not handle shows as a traceback on stderr with exit 1, as it would in a process.
    Call it from a thread (`asyncio.to_thread`) inside an async test: the commands run their own event loop.
    """
    cleared: dict[str, str | None] = dict.fromkeys(SETTINGS_VARIABLES)
    result = CliRunner().invoke(cli.app, list(args), input=stdin, env={**cleared, **env}, prog_name="slack-backend")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["slack-backend", *args], result.exit_code, result.stdout, stderr)
