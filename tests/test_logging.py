"""Tests of the logging set-up: secret redaction and the JSON and console renderers."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from slack_backend.ai.client import ClaudeDrafter
from slack_backend.ai.types import DraftRequest
from slack_backend.logging import CHATTY_HTTP_LOGGERS, REDACTED, configure_logging, get_logger, redact_secrets
from slack_backend.queue.log_context import merge_job_context, set_job_log_context
from tests.fakes.anthropic_server import FakeAnthropic

SLACK_TOKEN = "xoxb-1234-5678-abcdEFGH"
ANTHROPIC_KEY = "sk-ant-api03-abc_DEF-123"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger and structlog back as they were, so one test's set-up does not leak."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", event))


def test_secret_named_keys_are_masked_in_any_case() -> None:
    """Values of keys naming a token, secret, password, api key or authorization are masked, any case."""
    event = redact(
        bot_token="plain",
        Client_Secret="plain",
        PASSWORD="plain",
        anthropic_api_key="plain",
        headers={"Authorization": "Bearer plain", "Accept": "text/plain"},
        user="U123",
    )
    assert event == {
        "bot_token": REDACTED,
        "Client_Secret": REDACTED,
        "PASSWORD": REDACTED,
        "anthropic_api_key": REDACTED,
        "headers": {"Authorization": REDACTED, "Accept": "text/plain"},
        "user": "U123",
    }


def test_token_shaped_values_are_masked_anywhere() -> None:
    """Slack tokens and Anthropic keys are masked inside any string, nested lists and dicts included."""
    event = redact(
        event=f"calling with {SLACK_TOKEN}",
        args=["xoxp-1-2", ("ok", ANTHROPIC_KEY)],
        body={"text": f"key={ANTHROPIC_KEY};"},
    )
    assert event == {
        "event": f"calling with {REDACTED}",
        "args": [REDACTED, ("ok", REDACTED)],
        "body": {"text": f"key={REDACTED};"},
    }


def test_token_counts_are_not_masked() -> None:
    """Numbers under token-named keys (max_tokens, input_tokens) are counts, kept as they are."""
    assert redact(max_tokens=1024, input_tokens=0, token=None) == {"max_tokens": 1024, "input_tokens": 0, "token": None}


def test_json_renderer_emits_one_object_per_line() -> None:
    """The JSON format writes one JSON object per line, from structlog and stdlib loggers alike, redacted."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    get_logger("slack_backend.test").info("posted %s", "draft", token=SLACK_TOKEN, channel="C1")
    get_logger("slack_backend.test").debug("below the level")
    logging.getLogger("some.library").warning("retrying with %s", SLACK_TOKEN)
    try:
        raise RuntimeError(f"refused {ANTHROPIC_KEY}")
    except RuntimeError:
        get_logger("slack_backend.test").exception("call failed")

    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["posted draft", f"retrying with {REDACTED}", "call failed"]
    assert [r["logger"] for r in records] == ["slack_backend.test", "some.library", "slack_backend.test"]
    assert [r["level"] for r in records] == ["info", "warning", "error"]
    assert all(r["timestamp"].endswith("Z") and "T" in r["timestamp"] for r in records)
    assert records[0]["token"] == REDACTED
    assert records[0]["channel"] == "C1"
    assert "RuntimeError" in records[2]["exception"]
    assert SLACK_TOKEN not in stream.getvalue()
    assert ANTHROPIC_KEY not in stream.getvalue()


def test_console_renderer_is_redacted_and_not_json() -> None:
    """The console format writes readable lines, with secrets in messages and tracebacks masked."""
    stream = io.StringIO()
    configure_logging("DEBUG", "console", stream=stream)
    get_logger("slack_backend.test").debug("hello", password="hunter2")
    try:
        raise RuntimeError(f"refused {SLACK_TOKEN}")
    except RuntimeError:
        logging.getLogger("some.library").exception("call failed")
    output = stream.getvalue()
    assert "hello" in output
    assert "Traceback" in output
    assert "hunter2" not in output
    assert SLACK_TOKEN not in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.splitlines()[0])


def test_auto_format_is_json_when_not_a_terminal() -> None:
    """The "auto" format writes JSON lines to a stream that is not a terminal."""
    stream = io.StringIO()
    configure_logging("INFO", "auto", stream=stream)
    get_logger("slack_backend.test").info("started")
    assert json.loads(stream.getvalue())["event"] == "started"


def test_configuring_twice_keeps_one_handler() -> None:
    """Configuring again replaces our handler instead of adding a second one that doubles every line."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=io.StringIO())
    configure_logging("INFO", "json", stream=stream)
    get_logger("slack_backend.test").info("once")
    assert len(stream.getvalue().splitlines()) == 1


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "json"), ("INFO", "xml")])
def test_unknown_level_or_format_is_refused(level: str, fmt: str) -> None:
    """An unknown level or format raises ValueError instead of logging nothing or everything."""
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, fmt, stream=io.StringIO())


@pytest.mark.parametrize(
    "secret",
    [
        "xoxe-1-My0xLTEtMTIzNDU2Nzg5MA",
        "xoxe.xoxp-1-AbCdEf0123456789",
        "xapp-1-A0123456789-1234567890123-abcdef0123456789",
        "https://hooks.slack.com/commands/T0123/456789/AbCdEf012345",
        "https://hooks.slack-gov.com/actions/T0123/456789/AbCdEf012345",
    ],
)
def test_refresh_tokens_app_tokens_and_response_urls_are_redacted(secret: str) -> None:
    """Refresh (xoxe-), app-level (xapp-) tokens and Slack response_urls are masked inside any logged text."""
    event = redact(error=f"call failed ({secret}) at the end", nested={"list": [secret]})
    assert secret not in json.dumps(event)
    assert "xox" not in json.dumps(event)
    assert "hooks.slack" not in json.dumps(event)
    assert event["error"] == f"call failed ({REDACTED}) at the end"


# Fragments joined at random: token-shaped pieces, their near misses, braces and key-like words.
_FRAGMENTS = [
    "a",
    "x",
    "o",
    "-",
    "k",
    "_",
    ".",
    "/",
    "{",
    " ",
    "Token",
    "xoxb-1-2",
    "xox",
    "sk-ant-a",
    "hooks.slack.com/x",
]
_TEXT = st.lists(st.sampled_from(_FRAGMENTS), max_size=6).map("".join)
_KEYS = st.sampled_from(["event", "user", "bot_token", "max_tokens", "job_id", "headers", "level_of"])
_VALUES = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.booleans() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=6,
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_json_line_equals_the_redacted_rendering(event: dict[str, Any]) -> None:
    """A JSON line rendered without redaction (when judged safe) is the same text as redact-then-render."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    event.pop("event", None)
    get_logger("slack_backend.test").info("line", **event)
    written = json.loads(stream.getvalue())
    expected = redact(**{k: v for k, v in written.items()})
    assert written == expected
    assert "xoxb-1-2" not in stream.getvalue()
    assert "sk-ant-a" not in stream.getvalue()
    assert "https://hooks.slack.com/x" not in stream.getvalue()


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
async def test_the_model_clients_per_request_line_shows_only_at_debug(level: str, shown: bool) -> None:
    """A draft through the real SDK and the fake model: at INFO the HTTP library's "HTTP Request: POST ..." line
    (one per draft, saying less than `job completed`) is not written; at DEBUG it is; its warnings always are."""
    quiet = {name: logging.getLogger(name).level for name in CHATTY_HTTP_LOGGERS}
    stream = io.StringIO()
    try:
        configure_logging(level, "json", stream=stream)
        async with FakeAnthropic(api_key="sk-ant-test-logging") as claude:
            drafter = ClaudeDrafter(api_key="sk-ant-test-logging", model="claude-test", base_url=claude.base_url)
            try:
                await drafter.draft(DraftRequest(trigger_text="Lunch on Friday?", context=(), requester_user_id="U1"))
            finally:
                await drafter.aclose()
        logging.getLogger(CHATTY_HTTP_LOGGERS[-1]).warning("the HTTP library warns")
    finally:
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert any(event.startswith("HTTP Request: POST") for event in events) is shown
    assert "the HTTP library warns" in events


def _calls(log: Any) -> None:
    """Every way our code and libraries call a bound logger, at every level."""
    log.debug("debug line", n=1)
    log.info("plain", count=2, flag=True, nothing=None)
    log.info("posted %s to %s", "draft", "C1", channel="C1")
    log.info("%(n)s items", {"n": 3})
    log.info("100%% %s", "done")
    log.msg("as msg")
    log.warning("careful", reason="late")
    log.warn("careful again")
    log.bind(workspace="T1").error("bound", token=SLACK_TOKEN)
    log.critical("critical line")
    log.fatal("fatal line")
    log.log(logging.WARNING, "by number %s", 7)
    log.info("dropped")
    try:
        raise RuntimeError(f"refused {ANTHROPIC_KEY}")
    except RuntimeError:
        log.exception("call failed", attempt=2)


def _drop_marked(logger: Any, method_name: str, event_dict: Any) -> Any:
    if event_dict.get("event") == "dropped":
        raise structlog.DropEvent
    return event_dict


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
@pytest.mark.parametrize("chain", ["ours", "with a dropping processor"])
def test_the_json_loggers_methods_write_what_structlogs_own_write(level: str, chain: str) -> None:
    """The JSON format's one-call level methods give the lines structlog's filtering logger gives, through the
    same processors: interpolation, bound context, levels, aliases, DropEvent, exceptions. With our chain alone
    (production's), they render and write without calling the processor or the logger; with another processor
    ahead of it, through both."""
    stream = io.StringIO()
    configure_logging(level, "json", stream=stream)
    if chain != "ours":
        structlog.configure(processors=[_drop_marked, *structlog.get_config()["processors"]])
    assert type(get_logger("t").bind()).__name__.startswith("Direct")
    _calls(get_logger("slack_backend.test").bind(worker="w1"))
    ours = [json.loads(line) for line in stream.getvalue().splitlines()]

    stream.seek(0)
    stream.truncate()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)))
    _calls(get_logger("slack_backend.test").bind(worker="w1"))
    theirs = [json.loads(line) for line in stream.getvalue().splitlines()]

    for record in (*ours, *theirs):
        assert record.pop("timestamp").endswith("Z")
        # The traceback's frames name the calling function's lines: the same, but say so without line numbers.
        if "exception" in record:
            record["exception"] = record["exception"].splitlines()[-1]
    assert ours == theirs
    dropped = 0 if chain == "ours" or level in ("WARNING", "ERROR") else 1
    assert len(ours) == {"DEBUG": 14, "INFO": 13, "WARNING": 7, "ERROR": 4}[level] - dropped
    assert SLACK_TOKEN not in stream.getvalue()


def _context_calls() -> None:
    """Lines under structlog's contextvars and a job's context: bound, given by the call, unbound, reset, cleared."""
    log = get_logger("slack_backend.test")
    structlog.contextvars.bind_contextvars(workspace="T1", request_id="r1")
    log.info("bound")
    log.info("the call's key wins", workspace="T2")
    structlog.contextvars.unbind_contextvars("request_id")
    log.info("one unbound")
    with structlog.contextvars.bound_contextvars(request_id="r2", bot_token=SLACK_TOKEN):
        log.info("bound for a block")
    log.info("after the block")
    set_job_log_context("j1", "drafts", "T1", 2)
    log.info("in a job")
    log.bind(queue="bound wins", attempt=9).info("the bound logger's keys win")
    structlog.contextvars.clear_contextvars()
    log.warning("cleared")


def test_the_json_chain_merges_context_as_structlogs_processors_do() -> None:
    """Our one JSON processor writes the lines structlog's own chain writes (merge_contextvars, merge_job_context,
    level, logger, timestamp, stack, traceback, redaction, JSON), context merged the same way."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    contextvars.copy_context().run(_context_calls)
    ours = [json.loads(line) for line in stream.getvalue().splitlines()]

    stream.seek(0)
    stream.truncate()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_job_context,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
    )
    contextvars.copy_context().run(_context_calls)
    theirs = [json.loads(line) for line in stream.getvalue().splitlines()]

    for record in (*ours, *theirs):
        assert record.pop("timestamp").endswith("Z")
    assert ours == theirs
    assert [r.get("workspace") for r in ours] == ["T1", "T2", "T1", "T1", "T1", "T1", "T1", None]
    assert ours[3]["bot_token"] == REDACTED
    assert ours[6]["queue"] == "bound wins"


def _our_handler() -> logging.StreamHandler[Any]:
    return next(h for h in logging.getLogger().handlers if h.get_name() == "slack_backend")  # type: ignore[misc]


def test_on_a_stream_like_standard_error_lines_go_to_its_descriptor_whole_and_in_order(tmp_path: Any) -> None:
    """On a line-buffered UTF-8 file stream (standard error is one), our lines are written to its descriptor: the
    same text as through the stream, in order with the standard library's lines and others' whole lines."""
    path = tmp_path / "log"
    with open(path, "w", buffering=1, encoding="utf-8") as stream:
        configure_logging("INFO", "json", stream=stream)
        log = get_logger("slack_backend.test").bind(worker="w1")
        log.info("one", n=1)
        logging.getLogger("some.library").warning("two %s", SLACK_TOKEN)
        stream.write("three\n")
        log.info("four \u00fc \u2713", token=SLACK_TOKEN, nested={"api_key": "k"})
        # A partial line another writer leaves in the stream's buffer stays behind ours: ours stays whole.
        stream.write("five, partial")
        log.warning("six")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "three"
    assert lines[5] == "five, partial"
    records = [json.loads(line) for i, line in enumerate(lines) if i not in (2, 5)]
    assert [r["event"] for r in records] == ["one", f"two {REDACTED}", "four \u00fc \u2713", "six"]
    assert records[2]["token"] == REDACTED
    assert records[2]["nested"] == {"api_key": REDACTED}
    assert SLACK_TOKEN not in path.read_text(encoding="utf-8")

    through = io.StringIO()
    configure_logging("INFO", "json", stream=through)
    log = get_logger("slack_backend.test").bind(worker="w1")
    log.info("one", n=1)
    log.info("four \u00fc \u2713", token=SLACK_TOKEN, nested={"api_key": "k"})
    log.warning("six")
    expected = [json.loads(line) for line in through.getvalue().splitlines()]
    for record in (*records, *expected):
        record.pop("timestamp")
    assert [records[0], records[2], records[3]] == expected


def test_a_closed_stream_is_not_written_past_to_whatever_reuses_its_descriptor(tmp_path: Any) -> None:
    """Once the stream is closed its descriptor's number may name another file: lines fail as writing to a closed
    stream does, and that file gets nothing."""
    stream = open(tmp_path / "log", "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed below, on purpose
    configure_logging("INFO", "json", stream=stream)
    number = stream.fileno()
    stream.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT)
    try:
        if other != number:
            os.dup2(other, number)
        with pytest.raises(ValueError, match="closed file"):
            get_logger("slack_backend.test").info("after the close")
    finally:
        os.close(other)
        if other != number:
            os.close(number)
    assert (tmp_path / "other").read_bytes() == b""


def test_a_replaced_stream_gets_the_lines(tmp_path: Any) -> None:
    """When the handler's stream is replaced, lines go to the new stream, not to the first one's descriptor."""
    with open(tmp_path / "first", "w", buffering=1) as first, open(tmp_path / "second", "w", buffering=1) as second:
        configure_logging("INFO", "json", stream=first)
        get_logger("slack_backend.test").info("to the first")
        _our_handler().setStream(second)
        get_logger("slack_backend.test").info("to the second")
    assert [json.loads(line)["event"] for line in (tmp_path / "first").read_text().splitlines()] == ["to the first"]
    assert [json.loads(line)["event"] for line in (tmp_path / "second").read_text().splitlines()] == ["to the second"]
