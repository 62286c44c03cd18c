"""Logging set-up in one place: structlog and the standard library's loggers share one format, secrets redacted."""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, ExceptionRenderer, ExcInfo, Processor, WrappedLogger

from slack_backend.queue.log_context import merge_job_context

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
    # The hot path of every log line: plain strings and numbers are handled here, without a call per value.
    out = {}
    verdicts = _KEY_VERDICTS
    for key, value in event_dict.items():
        kind = value.__class__
        if kind is str:
            secret = verdicts.get(key)
            if secret is None:
                secret = _secret_key(key)
            if secret:
                out[key] = REDACTED
            # _mask's test, inline: four substring tests cost less than the call.
            elif "xox" in value or "xapp-" in value or "sk-ant-" in value or "hooks.slack" in value:
                out[key] = _SECRET_VALUE.sub(REDACTED, value)
            else:
                out[key] = value
        elif value is None or kind in _NUMBERS:
            out[key] = value
        else:
            out[key] = _redact(key, value)
    return out


def _mask(text: str) -> str:
    """Mask the secrets in `text`: the pattern runs only on text holding the literal part of one of its forms."""
    # Nearly every logged string (ids, names, messages) holds none of these; four substring tests cost a fraction
    # of a regex pass over the string.
    if "xox" in text or "xapp-" in text or "sk-ant-" in text or "hooks.slack" in text:
        return _SECRET_VALUE.sub(REDACTED, text)
    return text


# Key names are few (the code's own) and repeat on every line: each is judged once.
_KEY_VERDICTS: dict[object, bool] = {}
_NUMBERS = frozenset((bool, int, float))


def _secret_key(key: object) -> bool:
    verdict = _KEY_VERDICTS.get(key)
    if verdict is None:
        verdict = isinstance(key, str) and any(part in key.lower() for part in _SECRET_KEY_PARTS)
        if len(_KEY_VERDICTS) < 4096:  # bounded: a caller logging data-derived keys cannot grow it forever
            _KEY_VERDICTS[key] = verdict
    return verdict


def _redact(key: object, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if _secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return _mask(value)
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


# The HTTP clients under the Anthropic SDK (httpx, and the SDK's own copy of it).
CHATTY_HTTP_LOGGERS = ("httpx", "httpx2")


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

    handler = logging.StreamHandler(out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_job_context,
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
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_text, default=_json_fallback)
    else:
        final = [redact_secrets]
        # Plain tracebacks, not rich ones: rich shows locals (where tokens live) and its highlighting splits a
        # token into pieces the redaction pattern no longer matches.
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=_redacting(structlog.dev.plain_traceback)
        )

    if fmt == "json":
        # Production's format. Our own lines skip the standard library (a LogRecord, a second processor pass and
        # json.dumps cost 40 us a line): structlog checks the level before any processor runs, then one processor
        # merges the context and renders the line, which is written to the handler's stream under the handler's
        # lock, so lines never interleave with the standard library's.
        chain: list[Processor] = [_JsonLine()]
        structlog.configure(
            processors=chain,
            logger_factory=_LineLoggerFactory(handler),
            wrapper_class=_direct_bound_logger(level_no, chain),
            # Not cached: configuring again (tests, a CLI flag) must reach loggers created earlier.
            cache_logger_on_first_use=False,
        )
    else:
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                *shared,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_no)
    # The model client's HTTP library logs every request at INFO ("HTTP Request: POST ... 200 OK"): a second line
    # per draft that says less than `job completed`, written on the way from the model's answer to the user. Its
    # warnings still show, and at DEBUG so does every request.
    for name in CHATTY_HTTP_LOGGERS:
        logging.getLogger(name).setLevel(level_no if level_no <= logging.DEBUG else max(level_no, logging.WARNING))


def _orjson_text(obj: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    # orjson renders a log line in about a tenth of json.dumps's time; text, since the stream is a text stream.
    return orjson.dumps(obj, default=default).decode()


def _json_fallback(obj: Any) -> Any:
    """What JSON gets for a value it cannot encode (structlog's rule: `__structlog__()`, else repr), masked."""
    # Redaction ran before rendering and passes unknown objects through: their text is only made here.
    try:
        text = obj.__structlog__()
    except AttributeError:
        text = repr(obj)
    return _mask(text) if isinstance(text, str) else text


class _JsonLine:
    """The JSON chain as one processor: context, level, logger name, timestamp, stack and traceback, redaction.

    One processor instead of nine, giving the fields and values of structlog's merge_contextvars, our
    merge_job_context, structlog's add_log_level, add_logger_name, TimeStamper(fmt="iso", utc=True),
    StackInfoRenderer, format_exc_info, our redact_secrets and JSONRenderer. A line redaction would not change is
    rendered once and never copied: see `_needs_redaction`.
    """

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
        return _render_line(logger.name, _LEVEL_NAMES.get(method_name, method_name), event_dict)


def _render_line(logger_name: str, level: str, event_dict: EventDict) -> bytes:
    """The JSON line for `event_dict` at `level`, ending in a newline: UTF-8 bytes, as a descriptor takes them."""
    # merge_contextvars: the variables bind_contextvars made, each read directly, rather than a copy of the whole
    # context walked by name (the call's and the bound logger's keys win, as there).
    if _BOUND_CONTEXTVARS:
        for name, var in _BOUND_CONTEXTVARS.items():
            value = var.get()
            if value is not Ellipsis:
                event_dict.setdefault(name[_PREFIX_LENGTH:], value)
    # Only these keys can name a secret: those added below are ours. Judged on the shorter tuple.
    keys = tuple(event_dict)
    event_dict = merge_job_context(None, level, event_dict)
    event_dict["level"] = level
    event_dict["logger"] = logger_name
    # orjson writes it as TimeStamper(fmt="iso", utc=True) does (2026-12-01T10:51:10.123456Z, no fraction on a
    # whole second), in C rather than through isoformat and replace.
    event_dict["timestamp"] = datetime.now(UTC)
    if "stack_info" in event_dict:
        event_dict = _STACK_INFO(None, level, event_dict)
    # Tracebacks become a string first, so redaction sees them too.
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(None, level, event_dict)
    line = orjson.dumps(event_dict, default=_json_fallback, option=_LINE_OPTIONS)
    if _needs_redaction(keys, line):
        redacted = redact_secrets(None, level, event_dict)
        line = orjson.dumps(redacted, default=_json_fallback, option=_LINE_OPTIONS)
    return line


# The frames of this module sit between structlog's and the caller's: the stack starts at the caller, as before.
_STACK_INFO = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])
_LINE_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE

# structlog's own registry of the variables bind_contextvars made (name "structlog_<key>" -> ContextVar, default
# Ellipsis for "not bound"); test_logging checks the merge against structlog's merge_contextvars.
_BOUND_CONTEXTVARS: dict[str, ContextVar[Any]] = structlog.contextvars._CONTEXT_VARS
_PREFIX_LENGTH = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)


def _needs_redaction(keys: tuple[str, ...], line: bytes) -> bool:
    """False only when redact_secrets would leave the line's fields as they are, judged from the line rendered
    without it and the `keys` that could name a secret.

    A whole-line test in C instead of a Python step per value. Redaction changes a line only through a string
    holding a token (each appears verbatim in the JSON: orjson escapes only quotes, backslashes and control
    characters, none of which a token's literal part holds), or a value under a secret-named key. Top-level key
    names are judged once per set of keys; nested keys are not looked at, so any nested dict (a `{` past the
    first character) sends the line to redaction. Strings that merely look suspicious do too: redaction decides.
    """
    # Searched as text: `in` on bytes costs three times the decoding and a search of the text.
    text = line.decode()
    # Slack tokens (xox..., xapp-) hold an "x", which memchr finds at once: the rest is searched for only then.
    if "x" in text and ("xox" in text or "xapp-" in text):
        return True
    if "sk-ant-" in text or "hooks.slack" in text or "{" in text[1:]:
        return True
    verdict = _KEY_SET_VERDICTS.get(keys)
    if verdict is None:
        verdict = any(_secret_key(key) for key in keys)
        if len(_KEY_SET_VERDICTS) < 4096:  # bounded, like _KEY_VERDICTS
            _KEY_SET_VERDICTS[keys] = verdict
    return verdict


# The lines a process writes have few distinct sets of keys: one verdict each.
_KEY_SET_VERDICTS: dict[tuple[str, ...], bool] = {}
# structlog's add_log_level: the method's name, but "warning" for warn and "error" for exception.
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}


def _direct_bound_logger(min_level: int, chain: list[Processor]) -> type[Any]:
    """structlog's filtering bound logger for `min_level`, its enabled level methods each one call deep.

    structlog's own reach the processors through three calls, packing the keywords again at each: about a fifth of
    a JSON line's cost. These run the same steps in one: interpolate positional arguments, copy the bound context,
    add the keywords and the event, run the processors, drop the line on DropEvent, hand the result to the logger.
    While the processors are `chain` (our one JSON processor) and the logger ours, the line is rendered and
    written without going through either's call.
    """
    base = structlog.make_filtering_bound_logger(min_level)
    methods: dict[str, Any] = {}
    for level, name in _LEVEL_METHODS:
        if level >= min_level:
            methods[name] = _direct_method(name, chain)
    for alias, name in (("warn", "warning"), ("fatal", "critical"), ("msg", "info")):
        if name in methods:
            methods[alias] = methods[name]
    return type(f"Direct{base.__name__}", (base,), methods)


_LEVEL_METHODS = (
    (logging.DEBUG, "debug"),
    (logging.INFO, "info"),
    (logging.WARNING, "warning"),
    (logging.ERROR, "error"),
    (logging.CRITICAL, "critical"),
)


def _direct_method(name: str, chain: list[Processor]) -> Callable[..., Any]:
    level = _LEVEL_NAMES.get(name, name)

    def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        if args:
            # structlog's rule: a single non-empty mapping interpolates by name.
            one = args[0]
            event = event % one if len(args) == 1 and isinstance(one, Mapping) and one else event % args
        event_dict = self._context.copy()
        event_dict.update(kw)
        event_dict["event"] = event
        logger = self._logger
        if self._processors is chain and logger.__class__ is _LineLogger:
            logger.write(_render_line(logger.name, level, event_dict))
            return None
        try:
            for processor in self._processors:
                event_dict = processor(logger, name, event_dict)
        except structlog.DropEvent:
            return None
        if event_dict.__class__ is str or isinstance(event_dict, bytes | bytearray):
            return getattr(logger, name)(event_dict)
        if isinstance(event_dict, tuple):
            return getattr(logger, name)(*event_dict[0], **event_dict[1])
        if isinstance(event_dict, dict):
            return getattr(logger, name)(**event_dict)
        raise ValueError("the last processor returned neither a str, bytes, bytearray, tuple nor a dict")

    method.__name__ = name
    return method


class _LineLogger:
    """What structlog's JSON chain writes through: each rendered line to the handler's stream, under its lock."""

    def __init__(self, name: str, handler: logging.StreamHandler[TextIO], stream: TextIO, fd: int | None) -> None:
        self.name = name  # for structlog.stdlib.add_logger_name
        self._handler = handler
        self._stream = stream  # the handler's stream when `fd` was found: lines go past it only while it is
        self._fd = fd

    def write(self, line: bytes) -> None:
        """Write `line` (UTF-8, ending in a newline) and flush it."""
        handler = self._handler
        # The handler's lock itself, taken and released directly: its acquire()/release() are two Python calls
        # more, and a `with` block costs about 1,000 instructions more than this.
        lock = handler.lock
        lock.acquire()  # type: ignore[union-attr]
        try:
            fd = self._fd
            stream = self._stream
            # Not once the stream is closed or replaced: its descriptor's number may then name another file.
            if fd is not None and handler.stream is stream and not stream.closed:
                # Straight to the descriptor: the text stream's write, encoding and flush cost 3,000 instructions
                # more. Its buffers hold nothing of ours (each write through it is flushed), so order is kept.
                written = os.write(fd, line)
                while written < len(line):  # a signal can cut a write to a pipe short
                    line = line[written:]
                    written = os.write(fd, line)
            else:
                stream = handler.stream
                stream.write(line.decode())
                stream.flush()
        finally:
            lock.release()  # type: ignore[union-attr]

    def msg(self, line: str | bytes) -> None:
        """structlog's entry, for a chain other than ours (tests swap processors): its line, text or bytes."""
        if isinstance(line, bytes):
            self.write(line if line.endswith(b"\n") else line + b"\n")
            return
        handler = self._handler
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line + "\n")
            handler.stream.flush()

    debug = info = warning = warn = error = err = critical = fatal = exception = log = msg


class _LineLoggerFactory:
    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler
        self._stream = handler.stream
        self._fd = _descriptor_of(handler.stream)

    def __call__(self, *args: Any) -> _LineLogger:
        return _LineLogger(str(args[0]) if args else "", self._handler, self._stream, self._fd)


def _descriptor_of(stream: TextIO) -> int | None:
    """The descriptor a line may be written to directly, bypassing `stream`, or None to write through `stream`.

    Only for a UTF-8 text stream that flushes each line itself (standard error does: it is line-buffered, or
    written straight through to its file with PYTHONUNBUFFERED): a whole line written through it never waits in a
    buffer, so a line written past it keeps its place. Anything else (a StringIO, a file with a buffer) is written
    through.
    """
    if not isinstance(stream, io.TextIOWrapper):
        return None
    if not (stream.line_buffering or (stream.write_through and isinstance(stream.buffer, io.FileIO))):
        return None
    try:
        if codecs.lookup(stream.encoding).name != "utf-8":
            return None
        stream.flush()
        return stream.fileno()
    except (OSError, ValueError):  # closed, or not backed by a descriptor
        return None


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return the structlog logger called `name` (use the module's `__name__`)."""
    return structlog.stdlib.get_logger(name)
