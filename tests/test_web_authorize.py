"""web/_authorize.py: Bolt's authorization answer is reused per installation and user for a while, never across
users, never after a refusal, and dropped on a token revocation."""

from __future__ import annotations

from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse

from slack_backend.web._authorize import CachedAuthorize
from tests.support.clocks import MonotonicClock


class CountingAuthorize(AsyncAuthorize):
    """Answers for user U0ONE only (its own token), counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, **ids: Any) -> AuthorizeResult | None:
        self.calls += 1
        if ids["user_id"] != "U0ONE":
            return None
        return AuthorizeResult(
            enterprise_id=None, team_id=ids["team_id"], user_id="U0ONE", bot_token="xoxb-secret", user_token="xoxp-1"
        )


async def ask(authorize: CachedAuthorize, user: str, team: str = "T0ONE") -> AuthorizeResult | None:
    return await authorize(context=AsyncBoltContext(), enterprise_id=None, team_id=team, user_id=user)


async def test_an_answer_is_reused_until_it_expires() -> None:
    """The second request within ttl_s asks nothing; one past it asks again."""
    inner, clock = CountingAuthorize(), MonotonicClock()
    authorize = CachedAuthorize(inner, ttl_s=60, clock=clock)
    first = await ask(authorize, "U0ONE")
    clock.now_s += 59
    again = await ask(authorize, "U0ONE")
    assert inner.calls == 1
    assert first is not None
    assert again is not None
    assert again.user_token == first.user_token == "xoxp-1"
    clock.now_s += 2
    await ask(authorize, "U0ONE")
    assert inner.calls == 2


async def test_users_and_workspaces_are_kept_apart_and_refusals_are_not_kept() -> None:
    """Another user or workspace asks for itself (never gets U0ONE's token); a refusal is asked again."""
    inner = CountingAuthorize()
    authorize = CachedAuthorize(inner, clock=MonotonicClock())
    assert await ask(authorize, "U0ONE") is not None
    assert await ask(authorize, "U0TWO") is None
    assert await ask(authorize, "U0TWO") is None
    other_team = await ask(authorize, "U0ONE", team="T0TWO")
    assert other_team is not None
    assert other_team.team_id == "T0TWO"
    assert inner.calls == 4


async def test_each_caller_gets_its_own_copy() -> None:
    """A request that changes its answer changes no other request's."""
    authorize = CachedAuthorize(CountingAuthorize(), clock=MonotonicClock())
    first = await ask(authorize, "U0ONE")
    assert first is not None
    first["user_token"] = "changed"
    again = await ask(authorize, "U0ONE")
    assert again is not None
    assert again["user_token"] == "xoxp-1"


async def test_the_oldest_answers_go_past_max_entries() -> None:
    """The cache holds at most max_entries answers."""
    inner = CountingAuthorize()
    authorize = CachedAuthorize(inner, max_entries=2, clock=MonotonicClock())
    for team in ("T1", "T2", "T3"):
        await ask(authorize, "U0ONE", team=team)
    await ask(authorize, "U0ONE", team="T1")
    assert inner.calls == 4, "T1 was dropped, T3 kept"


async def test_a_revocation_event_drops_every_answer() -> None:
    """tokens_revoked or app_uninstalled, seen by the middleware: the next request asks again."""
    inner = CountingAuthorize()
    authorize = CachedAuthorize(inner, clock=MonotonicClock())
    await ask(authorize, "U0ONE")

    async def next_() -> BoltResponse:
        return BoltResponse(status=200)

    await authorize.forget_on_revocation({"event": {"type": "app_mention"}}, next_)
    await ask(authorize, "U0ONE")
    assert inner.calls == 1
    response = await authorize.forget_on_revocation({"event": {"type": "tokens_revoked"}}, next_)
    assert response.status == 200
    await ask(authorize, "U0ONE")
    assert inner.calls == 2


async def test_repr_shows_no_token() -> None:
    """Printed or logged, the cache shows counts only."""
    authorize = CachedAuthorize(CountingAuthorize(), clock=MonotonicClock())
    await ask(authorize, "U0ONE")
    assert "xox" not in repr(authorize)
