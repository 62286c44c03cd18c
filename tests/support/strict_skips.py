"""pytest plugin: with FORBID_SKIPS=1 (make test, CI) a skipped test fails the run unless tests/allowed-skips.txt
lists it with a reason; with REQUIRE_POSTGRES=1, SKIP_POSTGRES=1 is refused outright."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ALLOWED_SKIPS = Path(__file__).parent.parent / "allowed-skips.txt"


def read_allowed(path: Path) -> dict[str, str]:
    """Return `{node id: reason}` from an allow-list: one `node id  reason` per line, `#` starts a comment.

    Raises:
        pytest.UsageError: a line names a test without saying why it may skip.
    """
    allowed: dict[str, str] = {}
    if not path.is_file():
        return allowed
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        node_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise pytest.UsageError(f"{path}:{number}: {node_id} is allowed to skip without a reason")
        allowed[node_id] = reason.strip()
    return allowed


class StrictSkips:
    """Collects every skip of the session and turns an unlisted one into a failed run."""

    def __init__(self, allowed: dict[str, str]) -> None:
        self.allowed = allowed
        self.skipped: dict[str, str] = {}

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        # An xfail is reported as skipped too; xfail_strict already decides those.
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
            self.skipped[report.nodeid] = reason.removeprefix("Skipped: ")

    def unlisted(self) -> dict[str, str]:
        return {node: why for node, why in self.skipped.items() if node not in self.allowed}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unlisted() and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        unlisted = self.unlisted()
        if unlisted:
            terminalreporter.section("skipped tests not in tests/allowed-skips.txt (FORBID_SKIPS=1)", red=True)
            for node, why in sorted(unlisted.items()):
                terminalreporter.line(f"{node}: {why}")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("REQUIRE_POSTGRES") == "1" and os.environ.get("SKIP_POSTGRES") == "1":
        raise pytest.UsageError("REQUIRE_POSTGRES=1 (make test, CI) refuses SKIP_POSTGRES=1")
    if os.environ.get("FORBID_SKIPS") == "1":
        path = Path(os.environ.get("ALLOWED_SKIPS_FILE", str(ALLOWED_SKIPS)))
        config.pluginmanager.register(StrictSkips(read_allowed(path)), "strict-skips")
