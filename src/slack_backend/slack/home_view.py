"""The App Home tab (Block Kit): a user's drafting preferences, usage, connected account, watches, style examples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_backend.store.preferences import LENGTHS, MAX_INSTRUCTIONS_CHARS, MAX_SIGNATURE_CHARS, TONES, Preferences

# Every action id of the Home tab starts with this; the per-conversation unwatch buttons add ":<channel id>".
HOME_ACTION_PREFIX = "home_"
TONE_ACTION = "home_tone"
LENGTH_ACTION = "home_length"
LANGUAGE_ACTION = "home_language"
INSTRUCTIONS_ACTION = "home_instructions"
SIGNATURE_ACTION = "home_signature"
LEARN_ACTION = "home_learn"
QUIET_START_ACTION = "home_quiet_start"
QUIET_END_ACTION = "home_quiet_end"
STYLE_DELETE_ACTION = "home_style_delete"
DISCONNECT_ACTION = "home_disconnect"
CONNECT_ACTION = "home_connect"
UNWATCH_ACTION = "home_unwatch"
TIME_ZONE_ACTION = "home_time_zone"
# A select's value meaning "no setting" (Slack options need a non-empty value).
UNSET = "unset"
LEARN_ON = "on"
# A user's Slack time zone is used unless they pick one here (one outside this list is offered too).
TIME_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Amsterdam",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Helsinki",
    "Europe/Istanbul",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
)
LANGUAGES = ("English", "Spanish", "French", "German", "Portuguese", "Italian", "Dutch", "Japanese", "Chinese")
# Slack's documented limits: a Home view holds at most 100 blocks; a select at most 100 options.
MAX_VIEW_BLOCKS = 100


@dataclass(frozen=True, slots=True)
class Usage:
    """The workspace's AI use: tokens today against its daily quota (0: none), and tokens this month."""

    today_tokens: int
    daily_quota: int
    month_tokens: int


@dataclass(frozen=True, slots=True)
class Account:
    """Whether the user can connect their own Slack account (OAuth mode), and whether they have."""

    connect_url: str | None
    connected: bool


@dataclass(frozen=True, slots=True)
class HomeState:
    """Everything the Home tab shows for one user."""

    preferences: Preferences
    usage: Usage
    account: Account
    watched: tuple[str, ...]
    style_examples: int
    notice: str | None = None


def home_view(state: HomeState) -> dict[str, Any]:
    """The `views.publish` view for the user's Home tab."""
    prefs = state.preferences
    blocks: list[dict[str, Any]] = [
        _header("Your drafts"),
        _context("Only you see your drafts. Settings save as you change them and apply to your next draft."),
    ]
    if state.notice:
        blocks.append(_section(f":warning: {state.notice}"))
    blocks += [
        _select_section(
            "*Tone*", TONE_ACTION, [(t, t.capitalize()) for t in TONES], prefs.tone, "Match the conversation"
        ),
        _select_section(
            "*Length*", LENGTH_ACTION, [(n, n.capitalize()) for n in LENGTHS], prefs.length, "As the conversation needs"
        ),
        _select_section(
            "*Language*", LANGUAGE_ACTION, [(name, name) for name in LANGUAGES], prefs.language, "The conversation's"
        ),
        _text_input("Custom instructions", INSTRUCTIONS_ACTION, prefs.custom_instructions, MAX_INSTRUCTIONS_CHARS),
        _text_input("Signature", SIGNATURE_ACTION, prefs.signature, MAX_SIGNATURE_CHARS),
        _divider(),
        _header("Suggestions without asking"),
        _section("*Quiet hours*: no suggestions arrive on their own between these hours."),
        {
            "type": "actions",
            "block_id": "quiet_hours",
            "elements": [
                _hour_select(QUIET_START_ACTION, prefs.quiet_start_hour, "From"),
                _hour_select(QUIET_END_ACTION, prefs.quiet_end_hour, "Until"),
            ],
        },
        _time_zone_section(prefs.time_zone),
        *_watched_blocks(state.watched),
        _divider(),
        _header("Your voice"),
        _learn_section(prefs.learn_from_messages),
        _style_section(state.style_examples),
        _divider(),
        _header("Usage and account"),
        _section(_usage_text(state.usage)),
        *_account_blocks(state.account),
    ]
    return {"type": "home", "blocks": blocks}


def _time_zone_section(current: str | None) -> dict[str, Any]:
    zones = TIME_ZONES if current is None or current in TIME_ZONES else (current, *TIME_ZONES)
    return _select_section(
        f"*Time zone* for quiet hours: {current or 'UTC (Slack did not say yours)'}",
        TIME_ZONE_ACTION,
        [(zone, zone) for zone in zones],
        current,
        "From my Slack profile",
    )


def _usage_text(usage: Usage) -> str:
    quota = f" of {usage.daily_quota:,}" if usage.daily_quota > 0 else " (no daily quota)"
    return f"*Your workspace today*: {usage.today_tokens:,}{quota} tokens; *this month*: {usage.month_tokens:,} tokens."


def _watched_blocks(watched: tuple[str, ...]) -> list[dict[str, Any]]:
    if not watched:
        return [_context("You watch no conversations. Type `/draft watch` in one to get suggestions there.")]
    blocks = [
        _section(
            "*Watched conversations*: a suggestion arrives when someone mentions you, replies in your thread "
            "or writes to you."
        )
    ]
    for channel in watched:
        blocks.append(
            _section(
                f"<#{channel}>",
                accessory=_button("Unwatch", f"{UNWATCH_ACTION}:{channel}", channel),
            )
        )
    return blocks


def _learn_section(on: bool) -> dict[str, Any]:
    option = {"text": _plain("Learn from my messages"), "value": LEARN_ON}
    checkboxes: dict[str, Any] = {"type": "checkboxes", "action_id": LEARN_ACTION, "options": [option]}
    if on:
        checkboxes["initial_options"] = [option]
    return _section(
        "Read a few of my own recent messages (with my connected account) as examples of how I write.",
        accessory=checkboxes,
    )


def _style_section(count: int) -> dict[str, Any]:
    text = f"*Style examples kept*: {count}"
    if count == 0:
        return _section(text)
    button = _button("Delete all", STYLE_DELETE_ACTION, "all", style="danger")
    button["confirm"] = {
        "title": _plain("Delete style examples?"),
        "text": _plain(f"All {count} examples of your messages will be deleted."),
        "confirm": _plain("Delete"),
        "deny": _plain("Keep"),
    }
    return _section(text, accessory=button)


def _account_blocks(account: Account) -> list[dict[str, Any]]:
    if account.connected:
        return [
            _section(
                "*Your Slack account is connected*: drafts can read what you can read.",
                accessory=_button("Disconnect", DISCONNECT_ACTION, "disconnect"),
            )
        ]
    if account.connect_url is None:
        return [_context("Connecting your own Slack account is not available in this installation.")]
    connect = _button("Connect", CONNECT_ACTION, "connect")
    connect["url"] = account.connect_url
    return [_section("Connect your Slack account so drafts can read conversations the app cannot.", accessory=connect)]


def _select_section(
    label: str, action_id: str, choices: list[tuple[str, str]], current: str | None, unset_label: str
) -> dict[str, Any]:
    options = [_option(UNSET, unset_label)] + [_option(value, text) for value, text in choices]
    select: dict[str, Any] = {"type": "static_select", "action_id": action_id, "options": options}
    selected = next((o for o in options if o["value"] == current), options[0])
    select["initial_option"] = selected
    return _section(label, accessory=select)


def _hour_select(action_id: str, hour: int | None, label: str) -> dict[str, Any]:
    options = [_option(UNSET, f"{label}: off")] + [_option(str(h), f"{label} {h:02d}:00") for h in range(24)]
    current = UNSET if hour is None else str(hour)
    return {
        "type": "static_select",
        "action_id": action_id,
        "options": options,
        "initial_option": next(o for o in options if o["value"] == current),
    }


def _text_input(label: str, action_id: str, value: str | None, max_length: int) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": action_id,
        "max_length": max_length,
        "placeholder": _plain("Press Enter to save; empty clears it"),
        "dispatch_action_config": {"trigger_actions_on": ["on_enter_pressed"]},
    }
    if value:
        element["initial_value"] = value
    return {
        "type": "input",
        "block_id": action_id,
        "dispatch_action": True,
        "optional": True,
        "label": _plain(label),
        "element": element,
    }


def _option(value: str, text: str) -> dict[str, Any]:
    return {"text": _plain(text), "value": value}


def _button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": _plain(text), "action_id": action_id, "value": value}
    if style is not None:
        button["style"] = style
    return button


def _section(text: str, *, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if accessory is not None:
        block["accessory"] = accessory
    return block


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _plain(text)}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _divider() -> dict[str, Any]:
    return {"type": "divider"}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}
