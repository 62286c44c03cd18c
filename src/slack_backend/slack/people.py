"""Who wrote a message: a member's display name and time zone from Slack's users.info."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.slack.errors import classify_slack_error

# Display names are shown to the model; a profile field longer than this is cut (Slack allows 80 characters).
MAX_NAME_CHARS = 80


@dataclass(frozen=True, slots=True)
class Member:
    """A workspace member as a draft needs them: the name people see, and their IANA time zone when known."""

    user_id: str
    name: str
    tz: str | None = None


async def member(client: AsyncWebClient, user_id: str) -> Member | None:
    """The member `user_id` names (users.info), or None when Slack knows no such user (`user_not_found`, a bot).

    Raises:
        The classified Slack error: `RetryAfter` for a 429, an `UnrecoverableError` for a refusal such as
        missing_scope, or the transient error itself.
    """
    try:
        response = await client.users_info(user=user_id)
    except SlackApiError as exc:
        if _error_code(exc) in ("user_not_found", "bot_not_found"):
            return None
        classified = classify_slack_error(exc)
        if classified is exc:
            raise
        raise classified from exc
    user = response.get("user")
    return member_from(user) if isinstance(user, Mapping) else None


def member_from(user: Mapping[str, Any]) -> Member | None:
    """A Member from a users.info `user` object: the display name, else the real name, else the handle."""
    user_id = user.get("id")
    if not isinstance(user_id, str) or not user_id:
        return None
    profile = user.get("profile")
    profile = profile if isinstance(profile, Mapping) else {}
    for candidate in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name")):
        if isinstance(candidate, str) and candidate.strip():
            name = " ".join(candidate.split())[:MAX_NAME_CHARS]
            break
    else:
        return None
    tz = user.get("tz")
    return Member(user_id, name, tz if isinstance(tz, str) and tz else None)


def _error_code(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    error = data.get("error") if isinstance(data, Mapping) else None
    return error if isinstance(error, str) else ""
