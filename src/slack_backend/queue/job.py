"""Jobs: their states, options, backoff strategies, and the record read back from Redis."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson

from slack_backend.queue.errors import InvalidJobDataError

MAX_PRIORITY = 2_000_000
DEFAULT_PRIORITY = 1_000
MAX_ID_CHARS = 512


class JobState(StrEnum):
    """Where a job is; mirrors BullMQ's names."""

    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Backoff:
    """How long to wait before retry number n (n = attempts made so far, from 1).

    `exponential`: delay_ms * 2 ** (n - 1), so 2000 gives 2 s, 4 s, 8 s; `fixed`: delay_ms each time.
    `jitter` (0..1) takes up to that fraction off at random, to spread retries of a burst of failures.
    """

    kind: Literal["exponential", "fixed"] = "exponential"
    delay_ms: int = 2000
    jitter: float = 0.0
    max_delay_ms: int | None = None

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError("backoff delay_ms must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be within 0..1")

    def delay_for(self, attempts_made: int) -> int:
        """The delay in ms before the next try, after `attempts_made` failed tries."""
        n = max(1, attempts_made)
        delay = self.delay_ms * (2 ** (n - 1)) if self.kind == "exponential" else self.delay_ms
        if self.max_delay_ms is not None:
            delay = min(delay, self.max_delay_ms)
        if self.jitter:
            delay = int(delay * (1.0 - random.random() * self.jitter))
        return int(delay)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "delay_ms": self.delay_ms,
            "jitter": self.jitter,
            "max_delay_ms": self.max_delay_ms,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Backoff:
        return cls(
            kind=raw.get("kind", "exponential"),
            delay_ms=int(raw.get("delay_ms", 2000)),
            jitter=float(raw.get("jitter", 0.0)),
            max_delay_ms=raw.get("max_delay_ms"),
        )


BackoffStrategy = Callable[[int, BaseException], int]
"""A custom strategy: (attempts_made, error) -> delay ms; given to the Worker, used for every job."""


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """Per-job options, apart from the job's data. Unset fields take the queue's defaults."""

    job_id: str | None = None
    priority: int | None = None
    delay_ms: int = 0
    attempts: int | None = None
    backoff: Backoff | None = None
    group: str | None = None
    cost: int | None = None

    def __post_init__(self) -> None:
        check_options(self.job_id, self.priority, self.delay_ms, self.attempts, self.group, self.cost)


def check_options(
    job_id: str | None, priority: int | None, delay_ms: int, attempts: int | None, group: str | None, cost: int | None
) -> None:
    """What `JobOptions` checks, for a caller that takes the options apart (`Queue.add`, which builds none)."""
    if job_id is not None:
        check_identifier("job_id", job_id)
        if job_id.isdigit():
            raise InvalidJobDataError("job_id must not be all digits (those are the queue's own ids)")
    if group is not None:
        check_identifier("group", group)
    if priority is not None and not 1 <= priority <= MAX_PRIORITY:
        raise InvalidJobDataError(f"priority must be within 1..{MAX_PRIORITY} (1 starts first)")
    if delay_ms < 0:
        raise InvalidJobDataError("delay_ms must be >= 0")
    if attempts is not None and attempts < 1:
        raise InvalidJobDataError("attempts must be >= 1")
    if cost is not None and cost < 0:
        raise InvalidJobDataError("cost must be >= 0")


def check_identifier(label: str, value: str) -> None:
    """Ids and group names are stored as hash fields and set members: any text but NUL, within a size."""
    if not isinstance(value, str) or not value:
        raise InvalidJobDataError(f"{label} must be a non-empty string")
    if "\0" in value:
        raise InvalidJobDataError(f"{label} must not contain NUL characters")
    if len(value) > MAX_ID_CHARS:
        raise InvalidJobDataError(f"{label} is longer than {MAX_ID_CHARS} characters")


ProgressReporter = Callable[[Any], Awaitable[None]]


@dataclass
class Job:
    """A job as read from Redis. While it runs, `update_progress` reports progress under the worker's lease."""

    id: str
    name: str
    data: Any
    state: JobState
    group: str = ""
    priority: int = DEFAULT_PRIORITY
    attempts: int = 1
    attempts_made: int = 0
    starts: int = 0
    stalls: int = 0
    backoff: Backoff | None = None
    created_ms: int = 0
    processed_ms: int | None = None
    finished_ms: int | None = None
    due_ms: int | None = None
    progress: Any = None
    result: Any = None
    failed_reason: str | None = None
    stacktrace: list[str] = field(default_factory=list)
    data_error: str | None = None
    seq: int = 0
    worker: str | None = None
    first_processed_ms: int | None = None
    cost: int = 0
    cost_used: int | None = None
    """Set by the processor to what the run really used; settles the job's token-budget reservation."""
    _reporter: ProgressReporter | None = field(default=None, repr=False, compare=False)

    async def update_progress(self, progress: Any) -> None:
        """Record progress (any JSON value) and emit a `progress` event; only while the job runs."""
        if self._reporter is None:
            raise RuntimeError("update_progress is only available while the job runs in a worker")
        await self._reporter(progress)

    def summary(self) -> dict[str, Any]:
        """The fields an operator may see: ids, state, counts, times, worker and reason.

        Never the data, result or progress: in an application they hold users' text.
        """
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "group": self.group,
            "priority": self.priority,
            "attempts_made": self.attempts_made,
            "attempts": self.attempts,
            "stalls": self.stalls,
            "created_ms": self.created_ms,
            "processed_ms": self.processed_ms,
            "finished_ms": self.finished_ms,
            "due_ms": self.due_ms,
            "worker": self.worker,
            "failed_reason": self.failed_reason,
        }

    @property
    def attempts_left(self) -> int:
        return max(0, self.attempts - self.attempts_made)

    @classmethod
    def from_record(cls, record_json: str, data_json: str | None) -> Job:
        """Build a job from its stored record and data; corrupt data is kept as `data_error`, not raised."""
        rec: dict[str, Any] = loads_record(record_json)
        opts: dict[str, Any] = rec.get("opts") or {}
        data: Any = None
        data_error: str | None = None
        if data_json is None:
            data_error = "job data is missing"
        else:
            try:
                data = json.loads(data_json)
            except ValueError as exc:
                data_error = f"job data is not valid JSON: {exc}"
        stack = rec.get("stacktrace")
        backoff_raw = opts.get("backoff")
        return cls(
            id=str(rec["id"]),
            name=str(rec.get("name", "")),
            data=data,
            state=JobState(rec.get("state", "waiting")),
            group=str(rec.get("group", "")),
            priority=int(rec.get("priority", DEFAULT_PRIORITY)),
            attempts=int(opts.get("attempts", 1)),
            attempts_made=int(rec.get("attempts_made", 0)),
            starts=int(rec.get("starts", 0)),
            stalls=int(rec.get("stalls", 0)),
            backoff=Backoff.from_json(backoff_raw) if isinstance(backoff_raw, dict) else None,
            created_ms=int(rec.get("created_ms", 0)),
            processed_ms=_opt_int(rec.get("processed_ms")),
            finished_ms=_opt_int(rec.get("finished_ms")),
            due_ms=_opt_int(rec.get("due_ms")),
            progress=_opt_json(rec.get("progress")),
            result=_opt_json(rec.get("result")),
            failed_reason=rec.get("failed_reason"),
            stacktrace=[str(s) for s in stack] if isinstance(stack, list) else [],
            data_error=data_error,
            seq=int(rec.get("seq", 0)),
            worker=rec.get("worker"),
            first_processed_ms=_opt_int(rec.get("first_processed_ms")),
            cost=int(rec.get("cost") or 0),
            cost_used=_opt_int(rec.get("cost_used")),
        )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _refuse(value: object) -> Any:
    # JSONEncoder.default's error, word for word.
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _standard_compact(value: Any) -> str:
    return _COMPACT.encode(value)


def _c_compact_encoder() -> Callable[[Any], str] | None:
    """The standard library's C encoder, made once, with no table of objects seen: `_COMPACT.encode` makes a new
    encoder and a new table for each call, 40% of encoding the bench's 350-byte payload. Without the table, a value
    that holds itself runs into the recursion limit, and is then encoded the standard way for json's own error.
    None where the C encoder is missing or takes other arguments (another interpreter or version): the standard
    path then serves."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encode = make(None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, False)
        if "".join(encode({"a": [1, 2.5, "\u00e9"]}, 0)) != '{"a":[1,2.5,"\u00e9"]}':
            return None
    except TypeError:
        return None

    def compact(value: Any) -> str:
        try:
            return "".join(encode(value, 0))
        except RecursionError:
            # A value that holds itself, or one nested past the limit: the standard path says which, as json does.
            return _standard_compact(value)

    return compact


# json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False), for job data and results: the
# same text and the same errors, at about 60% of the cost.
dumps_compact: Callable[[Any], str] = _c_compact_encoder() or _standard_compact


def loads_record(text: str) -> Any:
    """Parse a job record (written by cjson inside Redis) as `json.loads` does, about three times faster.

    Only records: cjson writes numbers with at most 14 digits, while orjson would read an integer past 64 bits as
    a float, so data, results and progress (written by clients, any JSON) stay with `json.loads`. What orjson
    refuses and the standard library accepts (NaN, lone surrogate escapes) goes to `json.loads` too, so a record
    reads the same either way. Raises ValueError for text that is not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
