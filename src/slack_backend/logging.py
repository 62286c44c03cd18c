"""Logging set-up in one place: structlog and the standard library's loggers share one format, secrets redacted."""

from __future__ import annotations

import io
import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, ExceptionRenderer, ExcInfo, Processor, WrappedLogger

REDACTED = "[redacted]"
LOG_FORMATS = ("auto", "json", "console")

_SECRET_KEY_PARTS = ("token", "secret", "password", "api_key", "authorization")
# Slack tokens (xoxb-, xoxp-, refresh xoxe-, rotated xoxe.xoxp-, app-level xapp-), Anthropic keys, and Slack
# response_urls (whoever holds one may post to the user for 30 minutes), wherever they appear inside a string.
_SECRET_VALUE = re.compile(
    r"xox[abposre](?:\.xox[abposr])?-[A-Za-z0-9-]+"
    r"|xapp-[A-Za-z0-9-]+"
    r"|sk-ant-[A-Za-z0-9_-]+"
    r"|https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>)]*"
)
# Marks the root handler we install, so configuring again replaces it and leaves others' handlers alone.
_HANDLER_NAME = "slack_backend"


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: mask values of secret-named keys, and Slack tokens or Anthropic keys found in any value.

    Keys match when their name contains token, secret, password, api_key or authorization (any case); nested
    dicts, lists and tuples are searched too. Numbers, booleans and None under such keys are kept, since
    `max_tokens=1024` is a count, not a secret.
    """
    return {key: _redact(key, value) for key, value in event_dict.items()}


def _redact(key: object, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(key, str) and any(part in key.lower() for part in _SECRET_KEY_PARTS):
        return REDACTED
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: _redact(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(None, item) for item in value)
    return value


def _redacting(formatter: ExceptionRenderer) -> ExceptionRenderer:
    """Wrap a console exception formatter so tokens in exception messages are masked like everything else."""

    def render(sio: TextIO, exc_info: ExcInfo) -> None:
        buffer = io.StringIO()
        formatter(buffer, exc_info)
        sio.write(_SECRET_VALUE.sub(REDACTED, buffer.getvalue()))

    return render


def configure_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> None:
    """Send structlog and standard-library logs through one handler, as JSON lines or for a terminal.

    Args:
        level: DEBUG, INFO, WARNING, ERROR or CRITICAL, any case.
        fmt: "json", "console", or "auto" (console when the stream is a terminal, else JSON).
        stream: where to write; standard error by default.

    Raises:
        ValueError: for an unknown level or format.
    """
    level_no = logging.getLevelNamesMapping().get(level.upper())
    if level_no is None:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if fmt == "json":
        # Tracebacks become a string first, so redaction sees them too.
        final: list[Processor] = [structlog.processors.format_exc_info, redact_secrets]
        renderer = structlog.processors.JSONRenderer()
    else:
        final = [redact_secrets]
        # Plain tracebacks, not rich ones: rich shows locals (where tokens live) and its highlighting splits a
        # token into pieces the redaction pattern no longer matches.
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=_redacting(structlog.dev.plain_traceback)
        )

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: configuring again (tests, a CLI flag) must reach loggers created earlier.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_no)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return the structlog logger called `name` (use the module's `__name__`)."""
    return structlog.stdlib.get_logger(name)
