"""A process's outbound HTTP session to Slack, opened when the web app or a worker starts and closed when it stops:
one aiohttp session for Slack's Web API (Bolt's client, thread reads, users.info, reactions, ephemeral posts, posts
as a user) and for response_url posts.

One for the process's life, so no click and no draft pays for a new client: slack_sdk given no session opens one
per call, and with it a new connection (a TLS handshake to Slack).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp

# slack_sdk's own default per call; a shared session carries it (slack_sdk passes no timeout to a given session).
SLACK_API_TIMEOUT_S = 30.0


class _SharedSession:
    """The app's session as slack_sdk uses it (`closed`, `request`), which a deep copy leaves shared.

    Bolt deep-copies each request, its Web API client included, before it runs a lazy listener (Send as me,
    Dismiss); a live aiohttp session cannot be copied, and a copy would not be shared anyway.
    """

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @property
    def closed(self) -> bool:
        return self._session.closed

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._session.request(method, url, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedSession:
        return self


@asynccontextmanager
async def outbound_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The session every Slack Web API call and response_url post of the process goes through: opened inside the
    running loop (which aiohttp needs), closed on the way out."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_API_TIMEOUT_S))
    try:
        # slack_sdk asks for a ClientSession and uses only what _SharedSession has; so does SlackDelivery
        # (`request`, with its own per-post timeout).
        yield cast(aiohttp.ClientSession, _SharedSession(session))
    finally:
        await session.close()
