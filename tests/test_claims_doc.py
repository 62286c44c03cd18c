"""docs/claims.md points at tests that exist: every file and every `::name` it cites is in the suite.

The claims table is how a reader checks that a promise rests on a test. A row naming a test that was renamed or
deleted would still read as backed; this test makes such a row fail the build instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "docs" / "claims.md"
TESTS = ROOT / "tests"

# `file.py`, `file.py::name`, `dir/file.py::name[param]`, or `::name` (in the file last named in the same cell).
REFERENCE = re.compile(r"`((?:[\w/]+\.py)?(?:::[\w]+)?)(?:\[[^\]`]*\])?`")


def _test_cells() -> list[tuple[int, str]]:
    """The last column of each table row, with its line number."""
    cells = []
    for number, line in enumerate(CLAIMS.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("|") and not line.startswith("|---") and "test(s)" not in line:
            cells.append((number, line.rstrip(" |").rsplit("|", 1)[-1]))
    return cells


def _references(cell: str) -> list[tuple[str, str | None]]:
    """(file, name or None) for each test the cell cites; `::name` alone belongs to the file named before it."""
    found: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(cell):
        text = match.group(1)
        if not text or (".py" not in text and not text.startswith("::")):
            continue
        path, _, name = text.partition("::")
        if path:
            current = path.removeprefix("tests/")
        if current is None:
            raise AssertionError(f"`::{name}` cites no file before it in: {cell.strip()}")
        found.append((current, name or None))
    return found


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_claims_table_cites_exists() -> None:
    missing: list[str] = []
    cited = 0
    functions: dict[Path, set[str]] = {}
    for line, cell in _test_cells():
        for file, name in _references(cell):
            path = TESTS / file
            cited += 1
            if not path.is_file():
                missing.append(f"docs/claims.md:{line}: no file tests/{file}")
                continue
            if name is not None and name not in functions.setdefault(path, _functions(path)):
                missing.append(f"docs/claims.md:{line}: no test {name} in tests/{file}")
    assert not missing, "\n".join(missing)
    # Guards the parser itself: if the table's format changed and nothing matched, this test would pass on nothing.
    assert cited >= 60, f"only {cited} references found in docs/claims.md: has its format changed?"


def test_a_renamed_test_would_be_caught() -> None:
    """The checker sees a citation that names no existing test (so the check above is not vacuous)."""
    refs = _references(" `test_pipeline.py::no_such_test_anywhere`, `::another_missing_one` ")
    assert refs == [("test_pipeline.py", "no_such_test_anywhere"), ("test_pipeline.py", "another_missing_one")]
    assert "no_such_test_anywhere" not in _functions(TESTS / "test_pipeline.py")
