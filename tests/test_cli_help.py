"""The command line's shape: its commands, their help and their usage errors, which need no Redis or database."""

from __future__ import annotations

import pytest

from slack_backend.cli import LAZY_COMMANDS
from tests.support.cli import run_in_process

COMMANDS = ["check-config", "version", "manifest", "bench", *LAZY_COMMANDS]


def test_root_help_lists_every_command_in_order_with_its_first_paragraph() -> None:
    """`--help` names each command once, in the order it always had, its first paragraph whole (not cut at "e.g.")."""
    proc = run_in_process(["--help"], {})
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.split("Commands:\n", 1)[1]
    named = [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line[2] != " "]
    assert named == COMMANDS
    assert "e.g. --quick." in " ".join(commands.split())


@pytest.mark.parametrize("group", [[], ["jobs"], ["quota"], ["db"], ["tokens"]])
def test_a_group_without_a_command_prints_its_help_on_stdout_and_exits_2(group: list[str]) -> None:
    """As with typer's no_args_is_help: the group's help on stdout (not stderr), exit 2."""
    proc = run_in_process(group, {})
    assert proc.returncode == 2
    assert proc.stdout.startswith(f"Usage: {' '.join(['slack-backend', *group])} [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jobs", "list"], "Missing argument 'STATE'. Choose from:\n\twaiting,\n\tdelayed,\n\tactive,"),
        (["jobs", "list", "Bogus"], "'Bogus' is not a job state; use one of: waiting, delayed, active, completed"),
        (["jobs", "clean", "active", "--older-than", "1d"], "active jobs cannot be cleaned"),
        (["jobs", "clean", "failed", "--older-than", "2w"], "'2w' is not a duration; use e.g. 30s, 15m, 2h, 7d"),
        (["jobs", "clean", "failed"], "Missing option '--older-than'."),
        (["jobs", "counts", "--groups", "-1"], "Invalid value for '--groups'"),
        (["worker", "--processes", "65"], "Invalid value for '--processes' / '-p'"),
        (["quota", "set", "T0123ABCD"], "Missing argument 'tokens'."),
        (["nosuch"], "No such command 'nosuch'."),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(args: list[str], message: str) -> None:
    """A bad or missing argument or option is a usage error: exit 2, the reason on stderr, nothing on stdout."""
    proc = run_in_process(args, {})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert proc.stdout == ""


def test_option_defaults_and_argument_help_are_shown() -> None:
    """A command's help gives each option's default and range, and what each argument is."""
    proc = run_in_process(["jobs", "list", "--help"], {})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Usage: slack-backend jobs list [OPTIONS] STATE" in text
    assert "STATE waiting, delayed, active, completed or failed." in text
    assert "[default: 20; 1<=x<=10000]" in text
