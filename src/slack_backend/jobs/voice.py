"""The requester's voice for a draft: their saved preferences and, with their consent, their style examples."""

from __future__ import annotations

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from slack_backend.ai import Voice
from slack_backend.ai.voice import MAX_STYLE_EXAMPLES
from slack_backend.jobs.types import AIResponseJobData
from slack_backend.logging import get_logger
from slack_backend.slack import TokenSource
from slack_backend.slack.style import read_own_messages
from slack_backend.store import Preferences, PreferenceStore, StyleExampleStore

log = get_logger(__name__)


class VoiceSource:
    """Looks up what a draft should sound like, at the moment a job runs (a setting changed now counts now).

    With the user's consent (`learn_from_messages`), and while they have fewer than MAX_STYLE_EXAMPLES examples,
    one `conversations.history` call with their own token adds their recent messages of the conversation to the
    store; failures there (no token, Slack's 1-a-minute limit, not in the channel) leave the draft without them.
    """

    def __init__(
        self,
        preferences: PreferenceStore,
        examples: StyleExampleStore,
        tokens: TokenSource | None,
        slack_api_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`session`: the process's outbound session (slack/outbound.py), left open; None: one per call."""
        self._session = session
        self._preferences = preferences
        self._examples = examples
        self._tokens = tokens
        self._slack_api_url = slack_api_url

    async def voice_for(self, data: AIResponseJobData, preferences: Preferences | None = None) -> Voice:
        """The requester's Voice; never raises for a missing setting or an unreadable history.

        `preferences`: the requester's, when the job read them already (a draft's start read); else read here.
        """
        prefs = preferences if preferences is not None else await self._preferences.get(data.workspace_id, data.user_id)
        examples: tuple[str, ...] = ()
        if prefs.learn_from_messages:
            if await self._examples.count(data.workspace_id, data.user_id) < MAX_STYLE_EXAMPLES:
                await self._learn(data)
            examples = tuple(await self._examples.examples(data.workspace_id, data.user_id, limit=MAX_STYLE_EXAMPLES))
        return Voice(
            tone=prefs.tone,
            length=prefs.length,
            language=prefs.language,
            custom_instructions=prefs.custom_instructions,
            signature=prefs.signature,
            style_examples=examples,
        )

    async def _learn(self, data: AIResponseJobData) -> None:
        if self._tokens is None:
            return
        try:
            token = await self._tokens.user_token_for(data.workspace_id, data.user_id)
            if token is None:
                return
            client = AsyncWebClient(token=token, base_url=self._slack_api_url, session=self._session)
            own = await read_own_messages(client, data.channel_id, data.user_id)
        except Exception as exc:  # style is a bonus: a draft is never held up or failed for it
            log.info("style examples not read", channel=data.channel_id, error=type(exc).__name__)
            return
        await self._examples.add_history(data.workspace_id, data.user_id, own)
        log.info("style examples read", channel=data.channel_id, added=len(own))
