"""Daily token quotas per workspace: a default from the settings, overrides in the database, usage from the audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from slack_backend.store import AuditLog, QuotaStore
from slack_backend.store.db import utc_now


@dataclass(frozen=True)
class QuotaVerdict:
    """Whether a workspace may use the AI now; `quota` 0 means it has no quota."""

    allowed: bool
    used: int
    quota: int
    resets_at: datetime
    checked_at: datetime

    def user_text(self) -> str:
        """Plain words for the user: what happened and when it resets."""
        left = max(timedelta(0), self.resets_at - self.checked_at)
        hours, rest = divmod(int(left.total_seconds()), 3600)
        minutes = rest // 60
        return (
            f"your workspace has used today's AI quota ({self.quota:,} tokens); "
            f"it resets at 00:00 UTC, in {hours} h {minutes} min"
        )


class QuotaGuard:
    """Checks a workspace's use today (UTC) against its quota before any AI call is made."""

    def __init__(
        self,
        quotas: QuotaStore,
        audit: AuditLog,
        *,
        default_daily_tokens: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._quotas = quotas
        self._audit = audit
        self._default = default_daily_tokens
        self._clock = clock

    async def check(self, workspace_id: str) -> QuotaVerdict:
        """Read the workspace's quota and its use today, and judge them."""
        now, day_start = self.today()
        quota = await self._quotas.daily_tokens(workspace_id, self._default)
        if quota <= 0:
            return self.judge(quota, 0, now)
        used = await self._audit.tokens_used(workspace_id, since=day_start)
        return self.judge(quota, used, now)

    def today(self) -> tuple[datetime, datetime]:
        """Now, and the start of today (UTC): use is counted from there."""
        now = self._clock()
        return now, now.replace(hour=0, minute=0, second=0, microsecond=0)

    def judge(self, daily_tokens: int | None, used: int, now: datetime) -> QuotaVerdict:
        """The verdict for a workspace whose override is `daily_tokens` (None: the default) that used `used`
        tokens today, read at `now` (for a caller that read both in one statement:
        `SuggestionStore.draft_start`)."""
        quota = self._default if daily_tokens is None else daily_tokens
        resets_at = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        if quota <= 0:
            return QuotaVerdict(True, 0, 0, resets_at, now)
        return QuotaVerdict(used < quota, used, quota, resets_at, now)
