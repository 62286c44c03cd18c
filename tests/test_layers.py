"""The package's layers import one way: web (Slack in) -> jobs -> ai, slack (Slack out) -> queue, store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "slack_backend"


def _imports(path: Path) -> set[str]:
    """Every slack_backend module a file imports, at any depth (inside functions and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("slack_backend.")}


def _offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in (PACKAGE / folder).rglob("*.py")
        for name in _imports(path)
        if name.startswith(forbidden)
    )


_APP = tuple(
    f"slack_backend.{name}" for name in ("jobs", "web", "ai", "slack", "store", "config", "logging", "cli", "app")
)


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("slack", ("slack_backend.jobs", "slack_backend.web", "slack_backend.cli", "slack_backend.app")),
        ("ai", ("slack_backend.jobs", "slack_backend.web", "slack_backend.cli", "slack_backend.app")),
        ("jobs", ("slack_backend.web", "slack_backend.cli", "slack_backend.app")),
        ("web", ("slack_backend.cli", "slack_backend.app")),
        ("store", ("slack_backend.jobs", "slack_backend.web", "slack_backend.slack", "slack_backend.ai")),
        ("queue", _APP),
    ],
)
def test_layer_imports_point_down_only(folder: str, forbidden: tuple[str, ...]) -> None:
    """No module of a layer imports a layer above it (slack/ and ai/ never reach jobs/ or web/; queue/ no app)."""
    assert _offending(folder, forbidden) == []


def test_the_walk_sees_nested_imports(tmp_path: Path) -> None:
    """The import walk finds imports inside functions, so a lazy import cannot hide a wrong-way arrow."""
    module = tmp_path / "m.py"
    module.write_text("def f() -> None:\n    from slack_backend.jobs.types import TriggerKind\n")
    assert "slack_backend.jobs.types" in _imports(module)


def test_delivery_names_the_thread_trigger_as_jobs_does() -> None:
    """slack/ spells trigger kinds without importing jobs/: each spelling must match TriggerKind's."""
    from slack_backend.jobs.types import TriggerKind
    from slack_backend.slack import delivery

    assert TriggerKind.THREAD.value == delivery.THREAD_TRIGGER
    assert TriggerKind.SLASH_COMMAND.value == delivery.SLASH_COMMAND_TRIGGER
    assert TriggerKind.MESSAGE_ACTION.value == delivery.MESSAGE_ACTION_TRIGGER
    assert {TriggerKind.MENTION.value, TriggerKind.DM.value} == delivery._REACTION_TRIGGERS
