"""The store on both backends: SQLite in a temp file, and PostgreSQL in a fresh schema per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from slack_backend.slack.tokens import UserInstallationFinder
from slack_backend.store import (
    AuditLog,
    PreferenceStore,
    QuotaStore,
    SuggestionStore,
    TokenCipher,
    TokenKeyError,
    create_engine,
    create_tables,
    installation_store,
    oauth_state_store,
    ping,
    reencrypt_tokens,
)
from slack_backend.store.db import in_connection, in_transaction
from slack_backend.store.installations import TOKEN_COLUMNS
from slack_backend.store.quotas import workspace_quota_table
from tests.support.clocks import WallClock
from tests.support.databases import empty_database
from tests.support.engine import wait_until

CLIENT_ID = "1111.2222"
CIPHER_KEY = TokenCipher.new_key()
CIPHER = TokenCipher([CIPHER_KEY])
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """Factory-made engine on a database of this test's own, tables created; disposed afterwards."""
    async with empty_database(request.param, tmp_path) as made:
        await create_tables(made)
        yield made


def _installation(team_id: str = "T0001", bot_token: str = "xoxb-team-one") -> Installation:
    return Installation(
        app_id="A0001",
        enterprise_id=None,
        team_id=team_id,
        team_name="Team One",
        bot_token=bot_token,
        bot_id="B0001",
        bot_user_id="U0BOT",
        bot_scopes=["chat:write", "commands"],
        user_id="U0001",
        installed_at=T0.timestamp(),
    )


async def test_installation_saved_found_by_team_and_deleted(engine: AsyncEngine) -> None:
    """An installation is found by team id with its bot token and no enterprise id, and is gone once deleted."""
    store = installation_store(engine, CLIENT_ID, CIPHER)
    await store.async_save(_installation())

    found = await store.async_find_installation(enterprise_id=None, team_id="T0001")
    assert found is not None
    assert found.bot_token == "xoxb-team-one"
    assert found.enterprise_id is None
    assert found.team_id == "T0001"
    bot = await store.async_find_bot(enterprise_id=None, team_id="T0001")
    assert bot is not None
    assert bot.bot_token == "xoxb-team-one"
    assert await store.async_find_bot(enterprise_id=None, team_id="T0002") is None
    # Another Slack app sharing the database never sees this app's tokens.
    assert (
        await installation_store(engine, "9999.0000", CIPHER).async_find_bot(enterprise_id=None, team_id="T0001")
        is None
    )

    await store.async_delete_installation(enterprise_id=None, team_id="T0001")
    await store.async_delete_bot(enterprise_id=None, team_id="T0001")
    assert await store.async_find_installation(enterprise_id=None, team_id="T0001") is None
    assert await store.async_find_bot(enterprise_id=None, team_id="T0001") is None


async def test_reinstall_replaces_bot_token(engine: AsyncEngine) -> None:
    """After a reinstall the newest bot token is the one found."""
    store = installation_store(engine, CLIENT_ID, CIPHER)
    await store.async_save(_installation(bot_token="xoxb-old"))
    newer = _installation(bot_token="xoxb-new")
    newer.installed_at = T0.timestamp() + 60
    await store.async_save(newer)

    bot = await store.async_find_bot(enterprise_id=None, team_id="T0001")
    assert bot is not None
    assert bot.bot_token == "xoxb-new"


async def test_finds_read_what_slack_sdks_own_finds_read(engine: AsyncEngine) -> None:
    """The store's bot and installation finds (statements built once, one connection a lookup) give what
    slack_sdk's own finds give on the same rows, for every shape of ids: workspaces, an org-wide install, users,
    a user's installation that predates a reinstall's newer bot, a workspace whose installation has no bot token,
    and ids with nothing stored."""
    store = installation_store(engine, CLIENT_ID, CIPHER)
    assert isinstance(store, AsyncSQLAlchemyInstallationStore)

    def made(minutes: int, **fields: Any) -> Installation:
        base: dict[str, Any] = {
            "app_id": "A0001",
            "enterprise_id": None,
            "team_id": "T0001",
            "bot_token": "xoxb-team-one",
            "bot_id": "B0001",
            "bot_user_id": "U0BOT",
            "bot_scopes": ["chat:write"],
            "user_id": "U0001",
            "installed_at": T0.timestamp() + 60 * minutes,
        }
        return Installation(**(base | fields))

    await store.async_save(made(0, user_token="xoxp-one", user_scopes=["search:read"]))
    await store.async_save(made(1, user_id="U0002", user_token="xoxp-two", user_scopes=["search:read"]))
    # A reinstall after both users connected: its bot token is newer than the one on their installations.
    await store.async_save(made(2, bot_token="xoxb-team-one-new", bot_id="B0002", user_id="U0003"))
    await store.async_save(made(0, team_id="T0002", bot_token="xoxb-team-two"))
    await store.async_save(
        made(0, enterprise_id="E0001", team_id=None, is_enterprise_install=True, bot_token="xoxb-org")
    )
    await store.async_save(made(1, enterprise_id="E0001", team_id="T0009", bot_token="xoxb-grid-team"))
    await store.async_save(
        made(3, team_id="T0003", bot_token=None, bot_id=None, bot_user_id=None, user_token="xoxp-three")
    )
    asks: list[dict[str, Any]] = [
        {"enterprise_id": enterprise, "team_id": team, "is_enterprise_install": org}
        for enterprise in (None, "E0001", "E0404")
        for team in (None, "T0001", "T0002", "T0003", "T0009", "T0404")
        for org in (False, True)
    ]
    parent = AsyncSQLAlchemyInstallationStore
    for ask in asks:
        ours, theirs = await store.async_find_bot(**ask), await parent.async_find_bot(store, **ask)
        assert (ours and ours.to_dict()) == (theirs and theirs.to_dict()), ask
        for user in (None, "U0001", "U0002", "U0003", "U0404"):
            mine = await store.async_find_installation(**ask, user_id=user)
            sdk = await parent.async_find_installation(store, **ask, user_id=user)
            assert (mine and mine.to_dict()) == (sdk and sdk.to_dict()), (ask, user)
    found = await store.async_find_installation(enterprise_id=None, team_id="T0001", user_id="U0001")
    assert found is not None
    assert (found.user_token, found.bot_token) == ("xoxp-one", "xoxb-team-one-new")
    # The user's own row alone (the token source's one-query find) holds the same user fields as slack_sdk's find.
    user_fields = ("user_id", "user_token", "user_refresh_token", "user_token_expires_at", "user_scopes")
    assert isinstance(store, UserInstallationFinder)
    for team in ("T0001", "T0002", "T0003", "T0404"):
        for user in ("U0001", "U0002", "U0003", "U0404"):
            own = await store.async_find_user_installation(team_id=team, user_id=user)
            sdk = await parent.async_find_installation(store, enterprise_id=None, team_id=team, user_id=user)
            assert (own is None) == (sdk is None), (team, user)
            if own is not None and sdk is not None:
                assert [getattr(own, f) for f in user_fields] == [getattr(sdk, f) for f in user_fields], (team, user)
    own = await store.async_find_user_installation(team_id="T0001", user_id="U0001")
    assert own is not None
    assert (own.user_token, own.bot_token) == ("xoxp-one", "xoxb-team-one"), "its own row: the bot it was saved with"


async def test_oauth_state_consumed_once(engine: AsyncEngine) -> None:
    """An issued OAuth state is accepted once, then refused; an unknown state is refused."""
    states = oauth_state_store(engine)
    state = await states.async_issue()

    assert await states.async_consume(state) is True
    assert await states.async_consume(state) is False
    assert await states.async_consume("never-issued") is False


async def test_oauth_state_racing_consumers_one_wins(engine: AsyncEngine) -> None:
    """Callbacks racing with one state: exactly one of them is accepted."""
    states = oauth_state_store(engine)
    state = await states.async_issue()

    results = await asyncio.gather(*(states.async_consume(state) for _ in range(5)))

    assert sorted(results) == [False, False, False, False, True]


async def test_expired_oauth_state_refused(engine: AsyncEngine) -> None:
    """A state past its expiry is refused."""
    states = oauth_state_store(engine, expiration_seconds=0)
    state = await states.async_issue()

    assert await states.async_consume(state) is False


async def test_audit_round_trip_computes_wait_and_run_ms(engine: AsyncEngine) -> None:
    """queued -> started -> finished is recorded with wait_ms (queued to start) and run_ms (start to finish)."""
    clock = WallClock(T0)
    audit = AuditLog(engine, clock=clock)

    assert await audit.record_queued("Ev01", "T0001", "U0001", "C0001", "mention") is True
    [queued] = await audit.recent()
    assert (queued.status, queued.attempts, queued.queued_at) == ("queued", 0, T0)
    assert (queued.started_at, queued.wait_ms, queued.run_ms) == (None, None, None)

    clock.advance(1_500)
    assert await audit.record_started("Ev01", 1) is True
    [active] = await audit.recent()
    assert (active.status, active.attempts, active.wait_ms) == ("active", 1, 1_500)

    clock.advance(700)
    await audit.record_started("Ev01", 2)
    clock.advance(1_800)
    assert await audit.record_finished("Ev01", "completed", input_tokens=120, output_tokens=80) is True

    [row] = await audit.recent()
    assert row.job_id == "Ev01"
    assert (row.workspace_id, row.user_id, row.channel_id, row.trigger) == ("T0001", "U0001", "C0001", "mention")
    assert (row.status, row.attempts, row.input_tokens, row.output_tokens) == ("completed", 2, 120, 80)
    assert row.started_at == T0 + timedelta(milliseconds=1_500)
    assert row.finished_at == T0 + timedelta(milliseconds=4_000)
    assert (row.wait_ms, row.run_ms) == (1_500, 2_500)
    assert row.error_kind is None
    assert row.updated_at == row.finished_at
    assert row.queued_at.tzinfo is UTC
    assert await audit.record_started("unknown", 1) is False


async def test_audit_queued_and_started_is_one_transaction_with_the_same_rows(engine: AsyncEngine) -> None:
    """A worker's start writes queued+started in one transaction; a retry keeps the first start and its wait."""
    clock = WallClock(T0)
    audit = AuditLog(engine, clock=clock)
    begins: list[object] = []

    def on_begin(conn: object) -> None:
        begins.append(conn)

    event.listen(engine.sync_engine, "begin", on_begin)
    try:
        await audit.record_queued_and_started("Ev05", "T0001", "U0001", "C0001", "mention", 1)
        assert len(begins) == 1
        [first] = await audit.recent()
        assert (first.status, first.attempts, first.started_at, first.wait_ms) == ("active", 1, T0, 0)

        clock.advance(900)
        begins.clear()
        await audit.record_queued_and_started("Ev05", "T0001", "U0001", "C0001", "mention", 2)
        assert len(begins) == 1
        [retry] = await audit.recent()
        assert (retry.status, retry.attempts, retry.started_at, retry.wait_ms) == ("active", 2, T0, 0)
    finally:
        event.remove(engine.sync_engine, "begin", on_begin)
    with pytest.raises(ValueError, match="attempt"):
        await audit.record_queued_and_started("Ev06", "T0001", "U0001", "C0001", "mention", 0)


class TickingClock(WallClock):
    """A clock that moves 250 ms at every reading, so rows show which reading filled each column."""

    def __call__(self) -> datetime:
        now = self.now
        self.advance(250)
        return now


@contextlib.contextmanager
def executed(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) pairs `engine` sends to the database while the block runs."""
    sent: list[tuple[str, Any]] = []

    def on_execute(conn: Connection, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)


async def test_audit_first_start_is_one_statement_with_the_rows_of_two_calls(engine: AsyncEngine) -> None:
    """A first start is one INSERT whose row equals record_queued + record_started's (same clock readings); a
    retry reads and updates the row (3 statements) as record_started does."""
    await AuditLog(engine, clock=TickingClock(T0)).record_queued("Ev07", "T0001", "U0001", "C0001", "mention")
    await AuditLog(engine, clock=TickingClock(T0 + timedelta(milliseconds=250))).record_started("Ev07", 1)
    with executed(engine) as statements:
        await AuditLog(engine, clock=TickingClock(T0)).record_queued_and_started(
            "Ev08", "T0001", "U0001", "C0001", "mention", 1
        )
    assert len(statements) == 1
    with executed(engine) as statements:
        await AuditLog(engine, clock=TickingClock(T0 + timedelta(seconds=5))).record_queued_and_started(
            "Ev08", "T0001", "U0001", "C0001", "mention", 2
        )
    assert len(statements) == 3
    by_job = {row.job_id: row for row in await AuditLog(engine).recent()}
    two_calls, one_call = by_job["Ev07"], by_job["Ev08"]
    assert (one_call.queued_at, one_call.started_at, one_call.wait_ms) == (T0, T0 + timedelta(milliseconds=250), 250)
    assert replace(one_call, job_id="Ev07", attempts=1, updated_at=two_calls.updated_at) == two_calls
    # The retry kept the first start and its wait, and counted the attempt.
    assert (one_call.attempts, one_call.updated_at) == (2, T0 + timedelta(seconds=5, milliseconds=250))


async def test_audit_failure_keeps_only_a_classification(engine: AsyncEngine) -> None:
    """A failed job stores its error kind; a sentence (which could quote a message) is rejected."""
    audit = AuditLog(engine, clock=WallClock(T0))
    await audit.record_queued("Ev02", "T0001", "U0001", None, "slash_command")

    with pytest.raises(ValueError, match="short classification"):
        await audit.record_finished("Ev02", "failed", error_kind="model said: here is your draft")
    await audit.record_finished("Ev02", "failed", error_kind="rate_limited")

    [row] = await audit.recent()
    assert (row.status, row.error_kind, row.channel_id, row.run_ms) == ("failed", "rate_limited", None, None)


async def test_duplicate_record_queued_makes_one_row(engine: AsyncEngine) -> None:
    """A duplicate Slack delivery (same job_id), even concurrent, leaves exactly one audit row."""
    audit = AuditLog(engine, clock=WallClock(T0))

    first = await audit.record_queued("Ev03", "T0001", "U0001", "C0001", "mention")
    again = await audit.record_queued("Ev03", "T0001", "U0001", "C0001", "mention")
    racing = await asyncio.gather(
        *(audit.record_queued("Ev04", "T0001", "U0001", "C0001", "mention") for _ in range(4))
    )

    assert (first, again) == (True, False)
    assert sorted(racing) == [False, False, False, True]
    assert sorted(row.job_id for row in await audit.recent()) == ["Ev03", "Ev04"]


async def test_audit_table_has_no_message_text_column(engine: AsyncEngine) -> None:
    """The audit table's columns, as the database reports them, are ids, states, counts and times only."""

    def column_names(conn: Connection) -> set[str]:
        return {column["name"] for column in inspect(conn).get_columns("request_audit")}

    async with engine.connect() as conn:
        names = await conn.run_sync(column_names)

    assert names == {
        "id",
        "job_id",
        "workspace_id",
        "user_id",
        "channel_id",
        "trigger",
        "status",
        "attempts",
        "input_tokens",
        "output_tokens",
        "queued_at",
        "started_at",
        "finished_at",
        "wait_ms",
        "run_ms",
        "error_kind",
        "created_at",
        "updated_at",
    }
    assert not [name for name in names if any(word in name for word in ("text", "message", "prompt", "draft"))]


async def test_tokens_used_sums_per_workspace_since(engine: AsyncEngine) -> None:
    """tokens_used adds input and output tokens of one workspace's jobs finished at or after `since`."""
    clock = WallClock(T0 - timedelta(days=1))
    audit = AuditLog(engine, clock=clock)
    await audit.record_queued("old", "T0001", "U0001", "C0001", "mention")
    await audit.record_finished("old", "completed", input_tokens=1_000, output_tokens=1_000)
    clock.now = T0
    for job_id, workspace_id, tokens_in, tokens_out in [
        ("a", "T0001", 100, 10),
        ("b", "T0001", 200, 20),
        ("c", "T0002", 400, 40),
    ]:
        await audit.record_queued(job_id, workspace_id, "U0001", "C0001", "mention")
        await audit.record_finished(job_id, "completed", input_tokens=tokens_in, output_tokens=tokens_out)
    await audit.record_queued("running", "T0001", "U0001", "C0001", "mention")

    assert await audit.tokens_used("T0001", since=T0) == 330
    assert await audit.tokens_used("T0001", since=T0 - timedelta(days=2)) == 2_330
    assert await audit.tokens_used("T0002", since=T0) == 440
    assert await audit.tokens_used("T0003", since=T0) == 0
    assert await audit.tokens_used("T0001", since=T0 + timedelta(seconds=1)) == 0


async def test_recent_is_newest_first_and_limited(engine: AsyncEngine) -> None:
    """recent(limit) returns the newest queued requests first, at most `limit` of them."""
    clock = WallClock(T0)
    audit = AuditLog(engine, clock=clock)
    for index in range(5):
        await audit.record_queued(f"Ev{index}", "T0001", "U0001", "C0001", "mention")
        clock.advance(10)

    assert [row.job_id for row in await audit.recent(limit=3)] == ["Ev4", "Ev3", "Ev2"]


async def test_quota_overrides_set_get_delete(engine: AsyncEngine) -> None:
    """A quota override replaces the default, can be changed and listed, and deleting it restores the default."""
    quotas = QuotaStore(engine)
    assert await quotas.daily_tokens("T0001", default=50_000) == 50_000

    await quotas.set_daily_tokens("T0001", 1_000)
    await quotas.set_daily_tokens("T0002", 0)
    await quotas.set_daily_tokens("T0001", 2_000)

    assert await quotas.daily_tokens("T0001", default=50_000) == 2_000
    assert await quotas.daily_tokens("T0002", default=50_000) == 0
    assert await quotas.overrides() == {"T0001": 2_000, "T0002": 0}

    await quotas.set_daily_tokens("T0001", None)
    assert await quotas.daily_tokens("T0001", default=50_000) == 50_000
    assert await quotas.overrides() == {"T0002": 0}
    with pytest.raises(ValueError, match=">= 0"):
        await quotas.set_daily_tokens("T0001", -1)


async def seed_use_and_a_draft(
    audit: AuditLog, suggestions: SuggestionStore, clock: WallClock, jobs: list[str]
) -> None:
    """Three finished jobs (`jobs`: the first two of T0001, with 120 and 30 input tokens, the third of T0002 with 7),
    a second apart, and job-1's saved draft."""
    for job_id, workspace_id, tokens in zip(jobs, ("T0001", "T0001", "T0002"), (120, 30, 7), strict=True):
        await audit.record_queued_and_started(job_id, workspace_id, "U0001", "C0001", "slash_command", 1)
        clock.advance(1_000)
        await audit.record_finished(job_id, "completed", input_tokens=tokens, output_tokens=1)
    await suggestions.save(
        "job-1",
        workspace_id="T0001",
        user_id="U0001",
        channel_id="C0001",
        thread_ts=None,
        source_ts=None,
        text="a draft",
        model="claude-test",
        input_tokens=120,
        output_tokens=1,
        instruction="shorter",
    )


async def assert_quota_as_read(
    engine: AsyncEngine, daily_tokens: int | None, tokens_used: int, workspace_id: str, since: datetime
) -> None:
    """A start read's quota figures equal what QuotaStore.daily_tokens and AuditLog.tokens_used read."""
    override = await QuotaStore(engine).daily_tokens(workspace_id, default=-1)
    assert daily_tokens == (None if override == -1 else override)
    assert tokens_used == await AuditLog(engine).tokens_used(workspace_id, since)


async def test_draft_start_read_answers_as_the_four_reads_it_replaces(engine: AsyncEngine) -> None:
    """draft_start gives what get, daily_tokens, tokens_used and the requester's preferences give, in one
    statement, with or without a saved draft, an override, use or saved preferences (another user's, or the same
    user's in another workspace, are not theirs)."""
    clock = WallClock(T0)
    audit, quotas = AuditLog(engine, clock=clock), QuotaStore(engine)
    suggestions, preferences = SuggestionStore(engine, clock=clock), PreferenceStore(engine)

    async def check(job_id: str, workspace_id: str, since: datetime, user_id: str = "U0001") -> None:
        with executed(engine) as statements:
            start = await suggestions.draft_start(job_id, workspace_id, since=since, user_id=user_id)
        assert len(statements) == 1
        assert start.saved == await suggestions.get(job_id)
        assert start.preferences == await preferences.get(workspace_id, user_id)
        await assert_quota_as_read(engine, start.daily_tokens, start.tokens_used, workspace_id, since)

    await check("job-1", "T0001", T0)
    await seed_use_and_a_draft(audit, suggestions, clock, ["job-1", "job-2", "job-3"])
    await quotas.set_daily_tokens("T0002", 5_000)
    await preferences.update("T0001", "U0001", tone="friendly", signature="-- Ana", time_zone="Europe/Amsterdam")
    await preferences.update("T0002", "U0002", language="German", learn_from_messages=True)
    for job_id, workspace_id in (("job-1", "T0001"), ("job-2", "T0001"), ("job-9", "T0002"), ("job-1", "T0003")):
        for user_id in ("U0001", "U0002"):
            await check(job_id, workspace_id, T0, user_id)
            await check(job_id, workspace_id, T0 + timedelta(milliseconds=1_500), user_id)
    start = await suggestions.draft_start("job-1", "T0001", since=T0, user_id="U0001")
    assert (start.saved is not None, start.daily_tokens, start.tokens_used) == (True, None, 152)
    assert (start.preferences.tone, start.preferences.signature) == ("friendly", "-- Ana")
    assert start.preferences != await preferences.get("T0002", "U0001"), "saved in T0001 only"


async def test_the_quota_read_is_answered_from_the_index_on_sqlite(tmp_path: Path) -> None:
    """The draft's start read sums the day's tokens from the audit's quota-use index alone (SQLite's plan says
    COVERING INDEX): it never fetches the day's rows from the table, which cost 4.5 ms a read at 20,000 of them."""
    async with empty_database("sqlite", tmp_path) as sqlite_engine:
        await create_tables(sqlite_engine)
        with executed(sqlite_engine) as sent:
            await SuggestionStore(sqlite_engine).draft_start("job-1", "T0001", since=T0, user_id="U0001")
        [(statement, parameters)] = sent
        async with sqlite_engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert raw.driver_connection is not None
            plan = raw.driver_connection._conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    details = [str(row[-1]) for row in plan]
    assert any("request_audit USING COVERING INDEX ix_request_audit_quota_use" in d for d in details), details


async def test_card_start_read_answers_as_the_four_reads_it_replaces(engine: AsyncEngine) -> None:
    """card_start gives what get, revision, daily_tokens and tokens_used give, in one statement, with or without the
    draft, this job's revision, an override or use."""
    clock = WallClock(T0)
    audit, quotas = AuditLog(engine, clock=clock), QuotaStore(engine)
    suggestions = SuggestionStore(engine, clock=clock)

    async def check(suggestion_id: str, job_id: str, workspace_id: str, since: datetime) -> None:
        with executed(engine) as statements:
            start = await suggestions.card_start(suggestion_id, job_id, workspace_id, since=since)
        assert len(statements) == 1
        assert start.suggestion == await suggestions.get(suggestion_id)
        assert start.revision == await suggestions.revision(job_id)
        await assert_quota_as_read(engine, start.daily_tokens, start.tokens_used, workspace_id, since)

    await check("job-1", "refine-1", "T0001", T0)
    await seed_use_and_a_draft(audit, suggestions, clock, ["job-1", "refine-1", "job-3"])
    await check("job-1", "refine-1", "T0001", T0)
    revised = await suggestions.revise(
        "job-1",
        "refine-1",
        kind="refine",
        instruction="warmer",
        text="a warmer draft",
        model="claude-test",
        input_tokens=30,
        output_tokens=1,
        cut_short=False,
    )
    assert revised is not None
    assert revised == await suggestions.get("job-1"), "revise returns the row as stored, without reading it again"
    await quotas.set_daily_tokens("T0002", 5_000)
    for suggestion_id, job_id, workspace_id in (
        ("job-1", "refine-1", "T0001"),
        ("job-1", "refine-2", "T0001"),
        ("job-9", "refine-1", "T0002"),
        ("job-9", "refine-9", "T0003"),
    ):
        await check(suggestion_id, job_id, workspace_id, T0)
        await check(suggestion_id, job_id, workspace_id, T0 + timedelta(milliseconds=1_500))
    start = await suggestions.card_start("job-1", "refine-1", "T0001", since=T0)
    assert start.suggestion is not None
    assert start.revision is not None
    assert (start.suggestion.revision, start.revision.text, start.daily_tokens, start.tokens_used) == (
        1,
        "a warmer draft",
        None,
        152,
    )


async def test_engine_configured_for_its_backend(engine: AsyncEngine) -> None:
    """SQLite runs in WAL mode, syncing at checkpoints (synchronous=NORMAL), on the event loop's thread with a busy
    timeout of 0 there (a locked statement waits on a thread: test_store_sqlite_inline); PostgreSQL checks
    connections before use."""
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA synchronous")) == 1  # NORMAL
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 0
    else:
        assert engine.pool._pre_ping
    await create_tables(engine)  # a second run (every process start) is harmless


async def test_ping_true_on_live_database(engine: AsyncEngine) -> None:
    """ping answers True when the database is up."""
    assert await ping(engine) is True


async def test_ping_false_on_unreachable_database(engine: AsyncEngine, tmp_path: Path) -> None:
    """ping answers False, without raising, when the database of the same backend cannot be reached."""
    if engine.dialect.name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
    unreachable = create_engine(url)
    try:
        assert await ping(unreachable) is False
    finally:
        await unreachable.dispose()


def _add_quota(workspace_id: str) -> Callable[[Connection], None]:
    def add(conn: Connection) -> None:
        conn.execute(workspace_quota_table.insert().values(workspace_id=workspace_id, daily_tokens=1, updated_at=T0))

    return add


async def _quota_ids(engine: AsyncEngine) -> list[str]:
    query = select(workspace_quota_table.c.workspace_id).order_by(workspace_quota_table.c.workspace_id)
    return await in_connection(engine, lambda conn: list(conn.scalars(query)))


async def test_in_transaction_commits_what_returns_and_rolls_back_what_raises(engine: AsyncEngine) -> None:
    """`in_transaction`: the work's writes are committed when it returns and none is kept when it raises; its value
    comes back, and its exception is the caller's."""

    def add_then_fail(conn: Connection) -> None:
        _add_quota("T-FAILS")(conn)
        raise ValueError("the work failed")

    def add_kept(conn: Connection) -> str:
        _add_quota("T-KEPT")(conn)
        return "done"

    assert await in_transaction(engine, add_kept) == "done"
    with pytest.raises(ValueError, match="the work failed"):
        await in_transaction(engine, add_then_fail)
    assert await _quota_ids(engine) == ["T-KEPT"]
    # `in_connection` commits nothing: its write is gone with its connection.
    await in_connection(engine, _add_quota("T-NOT-COMMITTED"))
    assert await _quota_ids(engine) == ["T-KEPT"]
    assert isinstance(engine.pool, QueuePool)
    assert engine.pool.checkedout() == 0


async def test_in_transaction_cancelled_mid_way_keeps_nothing_and_frees_its_connection(tmp_path: Path) -> None:
    """A job cancelled (shutdown) while its transaction waits on PostgreSQL: nothing of it is kept, and its
    connection goes back to the pool or is discarded, so the next transactions run. (SQLite runs on the loop's
    thread and never waits there, a locked statement aside: test_store_sqlite_inline.)"""

    def add_then_wait(conn: Connection) -> None:
        _add_quota("T-CANCELLED")(conn)
        conn.execute(text("SELECT pg_sleep(5) /* cancelled mid-way */"))

    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
        " AND query LIKE '%cancelled mid-way%'"
    )

    async with empty_database("postgresql", tmp_path) as engine:
        await create_tables(engine)
        task = asyncio.ensure_future(in_transaction(engine, add_then_wait))
        # Cancelled once the server runs its second statement: the insert is done, the transaction still open.
        await wait_until(lambda: in_connection(engine, lambda conn: bool(conn.scalar(waiting))))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert isinstance(engine.pool, QueuePool)
        for n in range(engine.pool.size() + 2):  # more than the pool holds: a leaked connection would block one
            await asyncio.wait_for(in_transaction(engine, _add_quota(f"T-AFTER-{n}")), timeout=10)
        assert "T-CANCELLED" not in await _quota_ids(engine)
        assert engine.pool.checkedout() == 0


async def _raw_tokens(engine: AsyncEngine) -> list[str]:
    """Every token value as stored, read without the store (what a stolen backup holds)."""
    values: list[str] = []
    async with engine.connect() as conn:
        for table, columns in TOKEN_COLUMNS.items():
            rows = await conn.execute(text(f"SELECT {', '.join(columns)} FROM {table}"))
            values += [value for row in rows for value in row if value is not None]
    return values


def _with_user_token(**fields: Any) -> Installation:
    installation = _installation(**fields)
    installation.user_token = "xoxp-user-secret"
    installation.user_refresh_token = "xoxe-1-user-refresh"
    installation.bot_refresh_token = "xoxe-1-bot-refresh"
    return installation


async def test_tokens_are_encrypted_at_rest(engine: AsyncEngine) -> None:
    """Bot, user and refresh tokens are stored only as ciphertext and read back as the original tokens."""
    store = installation_store(engine, CLIENT_ID, CIPHER)
    await store.async_save(_with_user_token())

    raw = await _raw_tokens(engine)
    assert len(raw) == 6  # bot + refresh in slack_bots; bot, bot refresh, user, user refresh in slack_installations
    assert not [value for value in raw if "xox" in value]
    found = await store.async_find_installation(enterprise_id=None, team_id="T0001", user_id="U0001")
    assert found is not None
    assert (found.bot_token, found.user_token) == ("xoxb-team-one", "xoxp-user-secret")
    assert (found.bot_refresh_token, found.user_refresh_token) == ("xoxe-1-bot-refresh", "xoxe-1-user-refresh")
    other_key = installation_store(engine, CLIENT_ID, TokenCipher([TokenCipher.new_key()]))
    with pytest.raises(TokenKeyError, match="not in TOKEN_ENCRYPTION_KEY"):
        await other_key.async_find_bot(enterprise_id=None, team_id="T0001")


def test_a_cipher_keeps_what_it_decrypted_and_still_refuses_what_it_cannot_read() -> None:
    """A stored value reads the same the second time (from what the cipher kept) and after the kept values were
    emptied (past 1,024 of them); plaintext and a value of another key are refused every time."""
    cipher = TokenCipher([TokenCipher.new_key()])
    stored = cipher.encrypt("xoxb-kept")
    assert cipher.decrypt(stored) == cipher.decrypt(stored) == "xoxb-kept"
    others = [cipher.encrypt(f"xoxb-{n}") for n in range(1100)]
    assert [cipher.decrypt(value) for value in others] == [f"xoxb-{n}" for n in range(1100)]
    assert cipher.decrypt(stored) == "xoxb-kept"
    foreign = TokenCipher([TokenCipher.new_key()]).encrypt("xoxb-foreign")
    for _ in range(2):
        with pytest.raises(TokenKeyError, match="not encrypted"):
            cipher.decrypt("xoxb-plain")
        with pytest.raises(TokenKeyError, match="not in TOKEN_ENCRYPTION_KEY"):
            cipher.decrypt(foreign)


async def test_rotate_key_reencrypts_every_token(engine: AsyncEngine) -> None:
    """After rotating to a new key, the new key alone reads every token: the old one can be dropped."""
    await installation_store(engine, CLIENT_ID, CIPHER).async_save(_with_user_token())
    new_key = TokenCipher.new_key()
    before = await _raw_tokens(engine)

    rotated = await reencrypt_tokens(engine, TokenCipher.from_setting(f"{new_key},{CIPHER_KEY}"))

    assert rotated == 6
    assert not set(before) & set(await _raw_tokens(engine))
    found = await installation_store(engine, CLIENT_ID, TokenCipher([new_key])).async_find_installation(
        enterprise_id=None, team_id="T0001", user_id="U0001"
    )
    assert found is not None
    assert (found.bot_token, found.user_token) == ("xoxb-team-one", "xoxp-user-secret")


async def test_suggestion_saved_once_then_delivered_then_discarded(engine: AsyncEngine) -> None:
    """The first saved draft of a job wins, delivery is recorded, and discard forgets it."""
    clock = WallClock(T0)
    suggestions = SuggestionStore(engine, clock=clock)
    common: dict[str, Any] = {
        "workspace_id": "T0001",
        "user_id": "U0001",
        "channel_id": "C0001",
        "thread_ts": "1700000000.000100",
        "source_ts": "1700000000.000200",
        "model": "claude-test",
        "input_tokens": 10,
        "output_tokens": 5,
    }
    first = await suggestions.save("job-1", text="first draft", cut_short=True, **common)
    second = await suggestions.save("job-1", text="second draft", **common)

    assert second == first
    assert (first.text, first.status, first.cut_short, first.created_at) == ("first draft", "saved", True, T0)
    clock.advance(1_000)
    assert await suggestions.mark_delivered("job-1") is True
    delivered = await suggestions.get("job-1")
    assert delivered is not None
    assert (delivered.status, delivered.updated_at) == ("delivered", T0 + timedelta(seconds=1))
    assert await suggestions.discard("job-1") is True
    assert await suggestions.get("job-1") is None
    assert await suggestions.mark_delivered("job-1") is False


async def test_new_sqlite_file_is_private(tmp_path: Path) -> None:
    """A SQLite database file the app creates is readable and writable by its owner only (it holds tokens)."""
    path = tmp_path / "private.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_tables(engine)
    finally:
        await engine.dispose()
    assert path.stat().st_mode & 0o777 == 0o600
