"""CLI commands that operate the ai-responses queue: `slack-backend jobs counts|list|show|retry|clean|drain|...`."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from slack_backend.queue.errors import JobNotFoundError, JobStateError, QueueError
from slack_backend.queue.job import Job, JobState

if TYPE_CHECKING:
    # Redis, rich, the settings and the store load when a command runs, not at every start of the command line.
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from slack_backend.config import Settings
    from slack_backend.queue import Queue

T = TypeVar("T")
Doc = dict[str, Any]

FAILURE_EXIT_CODE = 1
ID_PAGE = 500
CLEAN_BATCH = 1000
REASON_CHARS = 60
FULL_TIME = "%Y-%m-%d %H:%M:%S"
# Listings leave out the year to fit three times on a line; `show` gives it.
SHORT_TIME = "%m-%d %H:%M:%S"

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)?")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


# -- argument parsing (bad values are usage errors: exit 2) ---------------------------------------------------


def parse_state(value: str) -> JobState:
    """A job state by name, any case; raises click.BadParameter naming the valid ones."""
    try:
        return JobState(value.strip().lower())
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise click.BadParameter(f"{value!r} is not a job state; use one of: {names}") from None


def parse_cleanable_state(value: str) -> JobState:
    """Like parse_state, without `active`: running jobs belong to their workers and to stall detection."""
    state = parse_state(value)
    if state is JobState.ACTIVE:
        raise click.BadParameter("active jobs cannot be cleaned; stall detection recovers them")
    return state


def parse_duration_ms(value: str) -> int:
    """`30s`, `15m`, `2h`, `7d`, `250ms` or plain milliseconds, as milliseconds."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration; use e.g. 30s, 15m, 2h, 7d or plain milliseconds")
    return int(match[1]) * _UNIT_MS[match[2] or "ms"]


class StateType(click.ParamType[JobState]):
    """The STATE argument: a job state read by `parse` (parse_state or parse_cleanable_state)."""

    name = "state"

    def __init__(self, parse: Callable[[str], JobState]) -> None:
        self.parse = parse

    def convert(self, value: str | JobState, param: click.Parameter | None, ctx: click.Context | None) -> JobState:
        return value if isinstance(value, JobState) else self.parse(value)

    def get_missing_message(self, param: click.Parameter, ctx: click.Context | None) -> str:
        # Worded as click words a missing choice.
        return "Choose from:\n\t" + ",\n\t".join(state.value for state in JobState)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of tables."
)
job_id_argument = click.argument("job_id", metavar="ID", help="The job id.")
state_argument = click.argument(
    "state", type=StateType(parse_state), metavar="STATE", help="waiting, delayed, active, completed or failed."
)
clean_state_argument = click.argument(
    "state", type=StateType(parse_cleanable_state), metavar="STATE", help="waiting, delayed, completed or failed."
)


# -- running one operation ------------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    """Print a one-line reason to stderr and exit 1."""
    click.echo(" ".join(message.split()), err=True)
    raise click.exceptions.Exit(FAILURE_EXIT_CODE)


def run_on_queue(settings: Settings, op: Callable[[Queue], Awaitable[T]]) -> T:
    """Run `op` on the ai-responses queue with a client of its own; Redis and queue errors exit 1 in one line."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from slack_backend.jobs.queues import ai_responses_queue
    from slack_backend.queue.connection import create_redis

    async def main() -> T:
        client = create_redis(settings.redis_target(), client_name="slack-backend-cli")
        try:
            return await op(ai_responses_queue(client, settings))
        finally:
            await client.aclose()

    # The masked form: the URL may carry a password, and this line ends up in terminals and CI logs.
    where = settings.masked()["REDIS_URL"]
    try:
        return asyncio.run(main())
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        fail(f"cannot reach Redis at {where}: {exc}")
    except RedisError as exc:
        fail(f"Redis at {where} refused the command: {exc}")
    except QueueError as exc:
        fail(str(exc))


def emit(doc: Doc, as_json: bool, render: Callable[[Doc, Console], None]) -> None:
    """Print the command's result: the JSON document itself, or tables rendered from it."""
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.console import Console

        render(doc, Console(highlight=False))


@contextmanager
def progress_bar(description: str, total: int | None, *, shown: bool) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar on stderr (stdout stays for the result); hidden in --json mode."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not shown,
    )
    with progress:
        yield progress, progress.add_task(description, total=total)


# -- reading --------------------------------------------------------------------------------------------------


async def counts_doc(queue: Queue, groups: int) -> Doc:
    by_state = await queue.counts()
    busiest = await queue.groups(groups)
    return {
        "queue": queue.name,
        "counts": {state.value: n for state, n in by_state.items()},
        "paused": await queue.is_paused(),
        "hold_remaining_ms": await queue.hold_remaining_ms(),
        "groups": [{"group": g.group, "waiting": g.waiting, "active": g.active} for g in busiest],
    }


def render_counts(doc: Doc) -> str:
    """The counts as plain text: `jobs counts` is run often (watch loops, runbooks), and rich's import alone was
    a tenth of its start."""
    from slack_backend._text_table import text_table

    counts = text_table(("state", "jobs"), list(doc["counts"].items()), title=f"queue {doc['queue']}", right={1})
    hold_ms = doc["hold_remaining_ms"]
    held = f"held for another {hold_ms / 1000:.1f} s (upstream Retry-After)" if hold_ms else "not held"
    parts = [counts, f"{'paused' if doc['paused'] else 'running'}; {held}"]
    if doc["groups"]:
        rows = [(g["group"] or "(none)", g["waiting"], g["active"]) for g in doc["groups"]]
        parts.append(
            "\n" + text_table(("workspace", "waiting", "active"), rows, title="busiest workspaces", right={1, 2})
        )
    return "\n".join(parts)


def job_summary(job: Job) -> Doc:
    """The fields a listing shows; never the data, which holds message text."""
    return job.summary()


async def list_doc(queue: Queue, state: JobState, limit: int, offset: int) -> Doc:
    total = (await queue.counts())[state]
    jobs = await queue.get_jobs(state, offset, offset + limit - 1)
    return {
        "queue": queue.name,
        "state": state.value,
        "total": total,
        "offset": offset,
        "limit": limit,
        "jobs": [job_summary(job) for job in jobs],
    }


def render_list(doc: Doc, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    shown = len(doc["jobs"])
    first = doc["offset"] + 1 if shown else doc["offset"]
    title = f"{doc['state']} jobs {first}-{doc['offset'] + shown} of {doc['total']}"
    table = Table(title=title)
    # In a narrow terminal the text columns wrap, so the id (what the next command needs) stays whole.
    table.add_column("id", no_wrap=True)
    for header in ("name", "group", "prio", "tries", "created", "processed", "finished"):
        table.add_column(header)
    table.add_column("failed reason", max_width=REASON_CHARS)
    for j in doc["jobs"]:
        table.add_row(
            Text(j["id"]),
            Text(j["name"]),
            Text(j["group"]),
            str(j["priority"]),
            f"{j['attempts_made']}/{j['attempts']}",
            when(j["created_ms"], SHORT_TIME),
            when(j["processed_ms"], SHORT_TIME),
            when(j["finished_ms"], SHORT_TIME),
            Text(truncate(j["failed_reason"] or "", REASON_CHARS)),
        )
    console.print(table)
    console.print(Text("times are UTC", style="dim"))


def job_doc(job: Job, *, with_data: bool) -> Doc:
    """Every field of the job; its data only as its keys unless asked, since it holds Slack message text."""
    doc: Doc = {
        **job_summary(job),
        "starts": job.starts,
        "stalls": job.stalls,
        "backoff": job.backoff.to_json() if job.backoff else None,
        "progress": job.progress,
        "result": job.result,
        "stacktrace": job.stacktrace,
        "data_error": job.data_error,
        "data_keys": sorted(job.data) if isinstance(job.data, dict) else None,
    }
    if with_data:
        doc["data"] = job.data
    return doc


def render_job(doc: Doc, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table("field", "value", title=f"job {doc['id']} (times UTC)")
    for name, value in doc.items():
        if name in ("failed_reason", "stacktrace", "data"):
            continue  # printed in full below the table
        text = when(value) if name.endswith("_ms") else value
        table.add_row(name, Text(text if isinstance(text, str) else json.dumps(text)))
    console.print(table)
    if doc["failed_reason"]:
        console.print(Text("failed reason:", style="bold"))
        console.print(Text(doc["failed_reason"]))
    for i, stack in enumerate(doc["stacktrace"], 1):
        console.print(Text(f"stack trace {i} (newest first):", style="bold"))
        console.print(Text(stack))
    if "data" in doc:
        console.print(Text("data:", style="bold"))
        console.print(Text(json.dumps(doc["data"], indent=2, ensure_ascii=False)))


def when(ms: int | None, fmt: str = FULL_TIME) -> str:
    """Epoch milliseconds as UTC text; empty when unset."""
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def truncate(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


# -- operating ------------------------------------------------------------------------------------------------


async def retry_one(queue: Queue, job_id: str, *, regenerate: bool = False, database_url: str = "") -> None:
    """Send a finished job back to waiting.

    A completed job delivered its draft already, and a rerun would deliver nothing (the draft is saved and never
    posted twice): it is refused unless `regenerate`, which forgets the saved draft and its delivery first, so the
    job calls the model again and posts a new draft.
    """
    job = await queue.get(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    if job.state not in (JobState.COMPLETED, JobState.FAILED):
        raise JobStateError(job_id, f"it is {job.state.value}; only failed or completed jobs can be retried")
    if job.state is JobState.COMPLETED and not regenerate:
        raise JobStateError(
            job_id,
            "it is completed and its draft was delivered, so a retry would do nothing; "
            "add --regenerate to draft it anew (a new model call and a new post)",
        )
    if regenerate:
        await _forget_draft(queue, job_id, database_url)
    try:
        await queue.retry(job_id)
    except JobStateError:
        job = await queue.get(job_id)
        state = job.state.value if job else "gone"
        raise JobStateError(job_id, f"it is {state}; only failed or completed jobs can be retried") from None


async def _forget_draft(queue: Queue, job_id: str, database_url: str) -> None:
    from slack_backend.jobs.ledger import RedisDeliveryLedger
    from slack_backend.store import SuggestionStore, create_engine, create_tables

    engine = create_engine(database_url)
    try:
        await create_tables(engine)
        await SuggestionStore(engine).discard(job_id)
    finally:
        await engine.dispose()
    await RedisDeliveryLedger(queue.redis, queue).forget(job_id)


async def retry_failed(queue: Queue, limit: int | None, *, shown: bool) -> Doc:
    """Retry failed jobs, newest first, reading ids a page at a time."""
    total = (await queue.counts())[JobState.FAILED]
    if limit is not None:
        total = min(total, limit)
    retried = skipped = offset = 0
    seen: set[str] = set()
    with progress_bar("retrying failed jobs", total, shown=shown) as (progress, task):
        while limit is None or retried < limit:
            ids = await queue.job_ids(JobState.FAILED, offset, offset + ID_PAGE - 1)
            # A job seen before has failed again since it was retried here: leave it, or this would never end.
            fresh = [job_id for job_id in ids if job_id not in seen]
            if limit is not None:
                fresh = fresh[: limit - retried]
            if not fresh:
                break
            seen.update(fresh)
            done = await queue.retry_many(fresh)
            retried += done
            skipped += len(fresh) - done  # removed or retried by someone else meanwhile
            # Retried jobs leave the failed set: the next page starts past what stayed in it.
            offset += len(ids) - done
            progress.advance(task, len(fresh))
    return {"queue": queue.name, "retried": retried, "skipped": skipped}


async def clean(queue: Queue, state: JobState, older_than_ms: int, *, shown: bool) -> Doc:
    """Delete jobs of `state` older than the cutoff, a batch per atomic call so Redis never stalls on one."""
    in_state = (await queue.counts())[state]
    with progress_bar(f"cleaning {state.value} jobs", in_state, shown=shown) as (progress, task):
        removed = await queue.clean(
            state, older_than_ms=older_than_ms, on_progress=lambda n: progress.update(task, completed=n)
        )
        # The count was only an upper bound (younger jobs stay); end the bar complete.
        progress.update(task, total=removed, completed=removed)
    return {"queue": queue.name, "state": state.value, "older_than_ms": older_than_ms, "removed": removed}


async def drain(queue: Queue, include_delayed: bool, *, confirmed: bool) -> Doc:
    if not confirmed:
        c = await queue.counts()
        n = c[JobState.WAITING] + (c[JobState.DELAYED] if include_delayed else 0)
        kinds = "waiting and delayed" if include_delayed else "waiting"
        # Asked on stderr, read from stdin: click's confirm writes part of its prompt to stdout, which must hold
        # only the result (as with --json).
        click.echo(f"Delete {n} {kinds} jobs of {queue.name}? Running jobs go on. [y/N]: ", nl=False, err=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            fail("not confirmed; nothing was deleted")
    removed = await queue.drain(include_delayed=include_delayed)
    return {"queue": queue.name, "removed": removed, "include_delayed": include_delayed}


def say(line: str) -> Callable[[Doc, Console], None]:
    """A renderer printing one line filled from the document."""

    def render(doc: Doc, console: Console) -> None:
        from rich.text import Text

        console.print(Text(line.format(**doc)))

    return render


# -- the commands ---------------------------------------------------------------------------------------------


def register(app: click.Group, settings_or_exit: Callable[[], Settings]) -> None:
    """Add the `jobs` command group to the root app."""

    @app.group("jobs")
    def jobs_app() -> None:
        """Inspect and operate the ai-responses queue (exit 1: the operation failed; 2: bad usage)."""

    @jobs_app.command("counts")
    @click.option("--groups", type=click.IntRange(min=0), default=10, help="How many of the busiest workspaces.")
    @json_option
    def counts(groups: int, as_json: bool) -> None:
        """Show jobs per state, whether the queue is paused or held, and the busiest workspaces."""
        doc = run_on_queue(settings_or_exit(), lambda q: counts_doc(q, groups))
        click.echo(json.dumps(doc, indent=2) if as_json else render_counts(doc))

    @jobs_app.command("list")
    @state_argument
    @click.option("--limit", type=click.IntRange(1, 10_000), default=20, help="Most jobs to show.")
    @click.option("--offset", type=click.IntRange(min=0), default=0, help="Jobs to skip.")
    @json_option
    def list_jobs(state: JobState, limit: int, offset: int, as_json: bool) -> None:
        """List jobs in one state (newest first for completed/failed, next to run first otherwise); no data."""
        doc = run_on_queue(settings_or_exit(), lambda q: list_doc(q, state, limit, offset))
        emit(doc, as_json, render_list)

    @jobs_app.command("show")
    @job_id_argument
    @click.option("--data", is_flag=True, help="Also print the job data (Slack message text).")
    @json_option
    def show(job_id: str, data: bool, as_json: bool) -> None:
        """Show one job: every field, its failed reason and stack traces; its data only as keys unless --data."""

        async def op(queue: Queue) -> Job:
            job = await queue.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            return job

        emit(job_doc(run_on_queue(settings_or_exit(), op), with_data=data), as_json, render_job)

    @jobs_app.command("retry")
    @job_id_argument
    @click.option("--regenerate", is_flag=True, help="Forget the saved draft: call the model again and post anew.")
    @json_option
    def retry(job_id: str, regenerate: bool, as_json: bool) -> None:
        """Send a failed job back to waiting with its attempts reset (it delivers its saved draft if it has one).

        A completed job is refused (its draft was delivered) unless --regenerate is given.
        """
        settings = settings_or_exit()
        run_on_queue(
            settings, lambda q: retry_one(q, job_id, regenerate=regenerate, database_url=settings.database_url)
        )
        doc = {"retried": job_id, "regenerate": regenerate} if regenerate else {"retried": job_id}
        emit(doc, as_json, say("job {retried} is waiting again"))

    @jobs_app.command("retry-failed")
    @click.option("--limit", type=click.IntRange(min=1), help="Retry at most this many.")
    @json_option
    def retry_failed_jobs(limit: int | None, as_json: bool) -> None:
        """Send every failed job (newest first) back to waiting with its attempts reset."""
        doc = run_on_queue(settings_or_exit(), lambda q: retry_failed(q, limit, shown=not as_json))
        emit(doc, as_json, say("{retried} failed jobs are waiting again ({skipped} gone or changed meanwhile)"))

    @jobs_app.command("remove")
    @job_id_argument
    @json_option
    def remove(job_id: str, as_json: bool) -> None:
        """Delete a job that is not running."""
        run_on_queue(settings_or_exit(), lambda q: q.remove(job_id))
        emit({"removed": job_id}, as_json, say("job {removed} removed"))

    @jobs_app.command("clean")
    @clean_state_argument
    @click.option(
        "--older-than",
        type=parse_duration_ms,
        required=True,
        metavar="DURATION",
        help="30s, 15m, 2h, 7d or milliseconds; finished (completed/failed) or created (others) before.",
    )
    @json_option
    def clean_jobs(state: JobState, older_than: int, as_json: bool) -> None:
        """Delete jobs of one state older than a duration, a thousand at a time."""
        doc = run_on_queue(settings_or_exit(), lambda q: clean(q, state, older_than, shown=not as_json))
        emit(doc, as_json, say("removed {removed} {state} jobs older than {older_than_ms} ms"))

    @jobs_app.command("pause")
    @json_option
    def pause(as_json: bool) -> None:
        """Stop every worker from starting jobs; running ones finish."""
        run_on_queue(settings_or_exit(), lambda q: q.pause())
        emit({"paused": True}, as_json, say("paused: workers start no new jobs; running ones finish"))

    @jobs_app.command("resume")
    @json_option
    def resume(as_json: bool) -> None:
        """Let workers start jobs again."""
        run_on_queue(settings_or_exit(), lambda q: q.resume())
        emit({"paused": False}, as_json, say("resumed: workers start jobs again"))

    @jobs_app.command("drain")
    @click.option("--delayed", is_flag=True, help="Delete delayed jobs too.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @json_option
    def drain_jobs(delayed: bool, yes: bool, as_json: bool) -> None:
        """Delete every waiting job (and delayed ones with --delayed); running jobs go on."""
        doc = run_on_queue(settings_or_exit(), lambda q: drain(q, delayed, confirmed=yes))
        emit(doc, as_json, say("removed {removed} jobs"))
