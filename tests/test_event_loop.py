"""The service's processes run on uvloop where it is installed (and on asyncio's loop without it), and its web server
parses HTTP with httptools."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

from slack_backend.cli_service import run_event_loop


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_service_runs_on_uvloop() -> None:
    """run_event_loop, which `run`, `serve` and `worker` use, runs the coroutine on uvloop and returns its result."""
    assert run_event_loop(loop_module()).startswith("uvloop")


def test_without_uvloop_the_service_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where uvloop cannot be imported (Windows), the same coroutine runs on asyncio's own loop."""
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert run_event_loop(loop_module()).startswith("asyncio")


def test_the_web_server_parses_http_with_httptools() -> None:
    """`run` and `serve` configure uvicorn with httptools' C parser, not h11's Python one."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from slack_backend.app import web_server_config
    from slack_backend.config import load_settings

    config = web_server_config(object(), load_settings({"SLACK_SIGNING_SECRET": "s" * 32}))
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
