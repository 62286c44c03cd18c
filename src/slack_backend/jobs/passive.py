"""Whether a passive suggestion is still wanted when its job starts, and releasing its thread when it is not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from slack_backend.jobs.types import AIResponseJobData, TriggerKind
from slack_backend.store import PreferenceStore, WatchStore, thread_key
from slack_backend.store.db import utc_now


class PassiveCheck:
    """Passive jobs wait behind every direct request: by the time one starts, the user may have unwatched the
    conversation or entered their quiet hours. Checked before any model call, so a skipped one costs nothing."""

    def __init__(
        self, preferences: PreferenceStore, watches: WatchStore, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._preferences = preferences
        self._watches = watches
        self._clock = clock

    async def skip_reason(self, data: AIResponseJobData) -> str | None:
        """Why the suggestion should not be drafted now ("unwatched", "quiet_hours"), or None to go on."""
        if data.channel_id not in await self._watches.watched(data.workspace_id, data.user_id):
            return "unwatched"
        if (await self._preferences.get(data.workspace_id, data.user_id)).in_quiet_hours(self._clock()):
            return "quiet_hours"
        return None

    async def release(self, data: AIResponseJobData) -> None:
        """Free the thread's open-suggestion slot: this suggestion will never reach the user."""
        key = thread_key(data.thread_ts, data.message_ts or "", is_dm=data.trigger is TriggerKind.WATCHED_DM)
        await self._watches.close_suggestion(data.workspace_id, data.user_id, data.channel_id, key)
