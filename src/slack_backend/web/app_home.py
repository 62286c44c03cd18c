"""App Home listeners: publish the user's Home tab when they open it, and save each setting they change there."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_backend.config import Settings
from slack_backend.logging import get_logger
from slack_backend.slack import home_view as hv
from slack_backend.store import AuditLog, PreferenceStore, QuotaStore, StyleExampleStore, WatchStore
from slack_backend.store.db import utc_now
from slack_backend.store.user_tokens import forget_user_token, has_user_token
from slack_backend.web.slack_connect import CONNECT_PATH

log = get_logger(__name__)

# users.info is a courtesy (the time zone for quiet hours): it may not hold up a Home tab or a command's answer.
USERS_INFO_TIMEOUT_S = 1.0
_SELECTS = {
    hv.TONE_ACTION: "tone",
    hv.LENGTH_ACTION: "length",
    hv.LANGUAGE_ACTION: "language",
    hv.QUIET_START_ACTION: "quiet_start_hour",
    hv.QUIET_END_ACTION: "quiet_end_hour",
    hv.TIME_ZONE_ACTION: "time_zone",
}
_TEXTS = {hv.INSTRUCTIONS_ACTION: "custom_instructions", hv.SIGNATURE_ACTION: "signature"}


@dataclass(frozen=True)
class UserStores:
    """The per-user tables the edge reads and writes, on the web app's database engine."""

    engine: AsyncEngine
    preferences: PreferenceStore
    watches: WatchStore
    examples: StyleExampleStore

    @classmethod
    def on(cls, engine: AsyncEngine) -> UserStores:
        return cls(engine, PreferenceStore(engine), WatchStore(engine), StyleExampleStore(engine))


async def remember_time_zone(stores: UserStores, client: AsyncWebClient | None, workspace: str, user: str) -> None:
    """Save the user's time zone from Slack's users.info (their profile's `tz`) unless one is saved; best effort."""
    if client is None or client.token is None or (await stores.preferences.get(workspace, user)).time_zone:
        return
    try:
        async with asyncio.timeout(USERS_INFO_TIMEOUT_S):
            response = await client.users_info(user=user)
        tz = (response.get("user") or {}).get("tz")
        if isinstance(tz, str) and tz:
            await stores.preferences.update(workspace, user, time_zone=tz)
    except Exception as exc:  # quiet hours then read UTC until the next try
        log.info("time zone not read", user=user, error=type(exc).__name__)


def installation_team(context: AsyncBoltContext) -> str | None:
    """The workspace of the installation Bolt authorized (not a Slack Connect body's other organization)."""
    result = context.authorize_result
    return (result.team_id if result else None) or context.team_id


class AppHome:
    """The Home tab's listeners. Without a database (`stores` None) they acknowledge and do nothing."""

    def __init__(self, settings: Settings, stores: UserStores | None) -> None:
        self._settings = settings
        self._stores = stores
        oauth = settings.slack_client_id is not None
        self._connect_url = f"{settings.public_url}{CONNECT_PATH}" if oauth and settings.public_url else None

    async def on_home_opened(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """app_home_opened on the Home tab: read the user's time zone once, then publish their Home view."""
        user, team = event.get("user"), installation_team(context)
        if event.get("tab") != "home" or self._stores is None or not isinstance(user, str) or team is None:
            return
        # A zone the user picked is kept; "From my Slack profile" cleared it, so Slack's is read again.
        await remember_time_zone(self._stores, context.client, team, user)
        await self._publish(context, team, user)

    async def on_action(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """A Home tab control: save the change at once and publish the view again (with the reason, if refused)."""
        await ack()
        user, team = (body.get("user") or {}).get("id"), installation_team(context)
        if self._stores is None or not isinstance(user, str) or team is None:
            return
        notice: str | None = None
        try:
            await self._apply(team, user, action)
        except ValueError as exc:
            notice = f"Not saved: {exc}."
        log.info("home setting changed", user=user, action=str(action.get("action_id")).split(":")[0])
        await self._publish(context, team, user, notice=notice)

    async def _apply(self, team: str, user: str, action: dict[str, Any]) -> None:
        stores = self._stores
        if stores is None:
            return
        action_id = str(action.get("action_id"))
        if action_id in _SELECTS:
            value = (action.get("selected_option") or {}).get("value")
            chosen = None if value in (None, hv.UNSET) else value
            if chosen is not None and action_id in (hv.QUIET_START_ACTION, hv.QUIET_END_ACTION):
                chosen = _hour(chosen)
            await stores.preferences.update(team, user, **{_SELECTS[action_id]: chosen})
        elif action_id in _TEXTS:
            await stores.preferences.update(team, user, **{_TEXTS[action_id]: action.get("value") or None})
        elif action_id == hv.LEARN_ACTION:
            selected = [o.get("value") for o in action.get("selected_options") or []]
            await stores.preferences.update(team, user, learn_from_messages=hv.LEARN_ON in selected)
        elif action_id == hv.STYLE_DELETE_ACTION:
            await stores.examples.delete_all(team, user)
        elif action_id == hv.DISCONNECT_ACTION:
            await forget_user_token(stores.engine, team, user)
        elif action_id.startswith(f"{hv.UNWATCH_ACTION}:"):
            await stores.watches.unwatch(team, user, str(action.get("value")))
        # CONNECT_ACTION is a link button: Slack opens the URL; its click needs nothing from us.

    async def _publish(self, context: AsyncBoltContext, team: str, user: str, *, notice: str | None = None) -> None:
        client = context.client
        if client is None or client.token is None or self._stores is None:
            return
        view = hv.home_view(await self._state(team, user, notice))
        try:
            await client.views_publish(user_id=user, view=view)
        except Exception as exc:  # the next open publishes again; the setting itself is saved
            log.warning("home view not published", user=user, error=type(exc).__name__)

    async def _state(self, team: str, user: str, notice: str | None) -> hv.HomeState:
        stores = self._stores
        if stores is None:  # pragma: no cover - _publish checks first
            raise RuntimeError("no database")
        now = utc_now()
        return hv.HomeState(
            preferences=await stores.preferences.get(team, user),
            usage=await self._usage(stores.engine, team, now),
            account=hv.Account(self._connect_url, await has_user_token(stores.engine, team, user)),
            watched=tuple(await stores.watches.watched(team, user)),
            style_examples=await stores.examples.count(team, user),
            notice=notice,
        )

    async def _usage(self, engine: AsyncEngine, team: str, now: datetime) -> hv.Usage:
        audit = AuditLog(engine)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month_start = day_start.replace(day=1)
        quota = await QuotaStore(engine).daily_tokens(team, self._settings.workspace_daily_token_quota)
        return hv.Usage(
            today_tokens=await audit.tokens_used(team, since=day_start),
            daily_quota=quota,
            month_tokens=await audit.tokens_used(team, since=month_start),
        )


def _hour(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError("quiet hours must be whole hours") from exc
