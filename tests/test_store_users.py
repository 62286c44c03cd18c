"""The per-user tables on SQLite and PostgreSQL: preferences, watches and open passive suggestions, style examples,
and disconnecting a user's token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk.oauth.installation_store.models.installation import Installation
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.store import (
    PreferenceStore,
    StyleExampleStore,
    TokenCipher,
    WatchLimitError,
    WatchStore,
    create_tables,
    installation_store,
)
from slack_backend.store.style_examples import MAX_EXAMPLES_PER_USER
from slack_backend.store.user_tokens import forget_user_token, has_user_token
from slack_backend.store.watches import MAX_WATCHES_PER_USER, OPEN_SUGGESTION_TTL
from tests.support.clocks import WallClock
from tests.support.databases import empty_database

TEAM, USER, OTHER, CHANNEL = "T0001", "U0001", "U0002", "C0001"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database of this test's own, migrated to head."""
    async with empty_database(request.param, tmp_path) as made:
        await create_tables(made)
        yield made


async def test_preferences_round_trip_and_a_bad_value_saves_nothing(engine: AsyncEngine) -> None:
    """Saved fields come back; blank text clears; an unknown field, tone, hour or zone is refused, nothing changed."""
    store = PreferenceStore(engine)
    assert (await store.get(TEAM, USER)).learn_from_messages is False, "consent is off by default"
    await store.update(TEAM, USER, tone="formal", signature="  -- Ana ", quiet_start_hour=22, quiet_end_hour=7)
    await store.update(TEAM, USER, language="  ", time_zone="Europe/Amsterdam")
    saved = await store.get(TEAM, USER)
    assert (saved.tone, saved.signature, saved.language) == ("formal", "-- Ana", None)
    assert saved.time_zone == "Europe/Amsterdam"
    refused: dict[str, dict[str, object]] = {
        "tone must be one of": {"tone": "angry"},
        "quiet_end_hour must be an hour": {"quiet_end_hour": 24},
        "time_zone must be an IANA zone": {"time_zone": "Mars/Olympus"},
        "unknown preference": {"colour": "red"},
    }
    for reason, bad in refused.items():
        with pytest.raises(ValueError, match=reason):
            await store.update(TEAM, USER, **bad)
    assert await store.get(TEAM, USER) == saved
    assert (await store.get(TEAM, OTHER)).tone is None, "per user"


async def test_one_claim_wins_a_race_and_a_stale_claim_is_taken_over(engine: AsyncEngine) -> None:
    """Five ingress requests racing for one thread's open suggestion: one wins; after the TTL a new claim wins."""
    clock = WallClock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    store = WatchStore(engine, clock=clock)
    results = await asyncio.gather(*(store.open_suggestion(TEAM, USER, CHANNEL, "1.1") for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await store.open_suggestion(TEAM, USER, CHANNEL, "1.2"), "another thread is its own"
    clock.now += OPEN_SUGGESTION_TTL + timedelta(seconds=1)
    assert await store.open_suggestion(TEAM, USER, CHANNEL, "1.1")
    assert await store.close_suggestion(TEAM, USER, CHANNEL, "1.1")
    assert await store.open_suggestion(TEAM, USER, CHANNEL, "1.1"), "closed: free again"


async def test_watches_are_capped_and_unwatch_forgets_threads_and_claims(engine: AsyncEngine) -> None:
    """A user watches at most MAX_WATCHES_PER_USER conversations; unwatching one forgets its threads and claims."""
    store = WatchStore(engine)
    for n in range(MAX_WATCHES_PER_USER):
        assert await store.watch(TEAM, USER, f"C{n:04d}")
    assert not await store.watch(TEAM, USER, "C0000"), "watched already"
    with pytest.raises(WatchLimitError):
        await store.watch(TEAM, USER, "C9999")
    await store.note_thread(TEAM, USER, "C0000", "1.1")
    await store.open_suggestion(TEAM, USER, "C0000", "1.1")
    assert await store.in_thread(TEAM, USER, "C0000", "1.1")
    assert await store.watchers(TEAM, "C0000") == [USER]
    assert await store.unwatch(TEAM, USER, "C0000")
    assert not await store.in_thread(TEAM, USER, "C0000", "1.1")
    assert await store.open_suggestion(TEAM, USER, "C0000", "1.1"), "its claim went with the watch"
    assert await store.watchers(TEAM, "C0000") == []


async def test_style_examples_keep_the_newest_per_user(engine: AsyncEngine) -> None:
    """Past MAX_EXAMPLES_PER_USER the oldest go, in the same transaction; a history ts seen before adds nothing."""
    clock = WallClock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    store = StyleExampleStore(engine, clock=clock)
    for n in range(MAX_EXAMPLES_PER_USER + 3):
        clock.now += timedelta(seconds=1)
        await store.add_history(TEAM, USER, [(f"1.{n}", f"message {n}"), (f"1.{n}", f"message {n}")])
    kept = await store.examples(TEAM, USER)
    assert len(kept) == MAX_EXAMPLES_PER_USER
    assert kept[0] == f"message {MAX_EXAMPLES_PER_USER + 2}"
    assert "message 2" not in kept
    assert "message 3" in kept


async def test_disconnect_clears_the_user_token_and_keeps_the_bot_token(engine: AsyncEngine) -> None:
    """forget_user_token empties the user's token columns; the same row's bot token still works."""
    store = installation_store(engine, "1111.2222", TokenCipher([TokenCipher.new_key()]))
    await store.async_save(
        Installation(
            app_id="A0001",
            team_id=TEAM,
            bot_token="xoxb-bot",
            bot_id="B0001",
            bot_user_id="U0BOT",
            user_id=USER,
            user_token="xoxp-user",
            user_scopes=["channels:history"],
        )
    )
    assert await has_user_token(engine, TEAM, USER)
    assert await forget_user_token(engine, TEAM, USER) >= 1
    assert not await has_user_token(engine, TEAM, USER)
    found = await store.async_find_installation(enterprise_id=None, team_id=TEAM, user_id=USER)
    assert found is not None
    assert found.user_token is None
    bot = await store.async_find_bot(enterprise_id=None, team_id=TEAM)
    assert bot is not None
    assert bot.bot_token == "xoxb-bot"
