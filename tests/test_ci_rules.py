"""Tests of the rules CI runs by: an unlisted skip fails the run, a listed one (with its reason) does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SKIPPING_TEST = """
import pytest

def test_passes() -> None:
    assert True

def test_skips() -> None:
    pytest.skip("no widget here")
"""


def run_pytest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run pytest with only the strict-skips plugin over one module that skips, from a directory of its own."""
    (tmp_path / "test_sample.py").write_text(SKIPPING_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    base = {k: v for k, v in os.environ.items() if k not in ("FORBID_SKIPS", "ALLOWED_SKIPS_FILE", "SKIP_POSTGRES")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.strict_skips", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unlisted_skip_fails_the_run_under_forbid_skips(tmp_path: Path) -> None:
    """With FORBID_SKIPS=1 a skip that the allow-list does not name makes pytest exit 1 and says which and why."""
    result = run_pytest(tmp_path, {"FORBID_SKIPS": "1", "ALLOWED_SKIPS_FILE": str(tmp_path / "none.txt")})
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "test_sample.py::test_skips: no widget here" in result.stdout


def test_listed_skip_passes_and_plain_runs_allow_skips(tmp_path: Path) -> None:
    """A skip listed with a reason passes under FORBID_SKIPS=1; without FORBID_SKIPS skips pass as usual."""
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("# comment\ntest_sample.py::test_skips widgets exist only on the CI runner\n")
    listed = run_pytest(tmp_path, {"FORBID_SKIPS": "1", "ALLOWED_SKIPS_FILE": str(allowed)})
    assert listed.returncode == pytest.ExitCode.OK, listed.stdout
    assert run_pytest(tmp_path, {}).returncode == pytest.ExitCode.OK


def test_allow_list_entry_needs_a_reason(tmp_path: Path) -> None:
    """An allow-list line with no reason is a usage error (exit 4), not a silent pass."""
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("test_sample.py::test_skips\n")
    result = run_pytest(tmp_path, {"FORBID_SKIPS": "1", "ALLOWED_SKIPS_FILE": str(allowed)})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "without a reason" in result.stderr


def test_require_postgres_refuses_skip_postgres(tmp_path: Path) -> None:
    """REQUIRE_POSTGRES=1 (set by make test and CI) with SKIP_POSTGRES=1 stops pytest before any test runs."""
    result = run_pytest(tmp_path, {"REQUIRE_POSTGRES": "1", "SKIP_POSTGRES": "1"})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "refuses SKIP_POSTGRES=1" in result.stderr


def test_checked_in_allow_list_parses() -> None:
    """tests/allowed-skips.txt, which CI reads, gives a reason for every test it lists."""
    from tests.support.strict_skips import ALLOWED_SKIPS, read_allowed

    assert all(read_allowed(ALLOWED_SKIPS).values())
