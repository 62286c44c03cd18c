"""The stand-in drafter used when no ANTHROPIC_API_KEY is set, and the factory that picks a drafter."""

from __future__ import annotations

from slack_backend.ai.client import DEFAULT_TIMEOUT_S, BeforeCall, ClaudeDrafter
from slack_backend.ai.prompt import estimate_input_tokens, estimate_text_tokens
from slack_backend.ai.types import Draft, Drafter, DraftRequest

OFFLINE_LABEL = "[offline draft - no ANTHROPIC_API_KEY set]"

# Enough of the trigger to show the placeholder belongs to this request, short enough to stay one line.
_QUOTE_CHARS = 120


class OfflineDrafter:
    """Returns a clearly labelled placeholder draft, so the whole flow runs without an API key.

    It stands in for the model, so it takes the model's rate-limit slot too (`before_call`): a demo behaves, and
    is limited, like the real thing.
    """

    def __init__(
        self, *, model: str = "offline", max_tokens: int = 1024, before_call: BeforeCall | None = None
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._before_call = before_call

    async def draft(self, request: DraftRequest) -> Draft:
        """A placeholder quoting the trigger; never fails and never touches the network."""
        if self._before_call is not None:
            await self._before_call()
        quote = " ".join((request.trigger_text or "the thread").split())
        if len(quote) > _QUOTE_CHARS:
            quote = quote[: _QUOTE_CHARS - 1] + "…"
        text = (
            f"{OFFLINE_LABEL} A real draft would answer: “{quote}” "
            f"(using {len(request.context)} context message(s)). Set ANTHROPIC_API_KEY to get one."
        )
        return Draft(
            text=text,
            input_tokens=estimate_input_tokens(request),
            output_tokens=estimate_text_tokens(text),
            model=self.model,
            offline=True,
        )

    async def estimate_tokens(self, request: DraftRequest) -> int:
        """The same estimate the real drafter gives, so budgets behave alike offline."""
        return estimate_input_tokens(request) + self.max_tokens

    async def aclose(self) -> None:
        """Nothing to release."""


def make_drafter(
    api_key: str | None,
    model: str,
    base_url: str | None,
    max_tokens: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    before_call: BeforeCall | None = None,
) -> Drafter:
    """A ClaudeDrafter when an API key is given, else an OfflineDrafter (a blank key counts as none).

    `before_call` is awaited right before each model call (or stand-in draft): the shared rate limit's slot.
    """
    if api_key is None or not api_key.strip():
        return OfflineDrafter(model=model, max_tokens=max_tokens, before_call=before_call)
    return ClaudeDrafter(
        api_key=api_key.strip(),
        model=model,
        base_url=base_url,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        before_call=before_call,
    )
