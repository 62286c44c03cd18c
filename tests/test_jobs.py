"""The app's job layer: typed data validated on enqueue, workspace groups, trigger priorities, cost estimates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from slack_backend.jobs import DIRECT_PRIORITY, PASSIVE_PRIORITY, AIResponseJobData, TriggerKind, queue_ai_response
from slack_backend.jobs.cost import CONTEXT_MAX_CHARS, estimate_cost
from slack_backend.queue import InvalidJobDataError, JobState
from tests.support.engine import QueueFactory
from tests.support.procs import ROOT

VALID: dict[str, Any] = {
    "workspace_id": "T0123ABCD",
    "user_id": "U0123ABCD",
    "channel_id": "C0123ABCD",
    "trigger": "slash_command",
    "trigger_text": "Can we ship on Friday?",
    "response_url": "https://hooks.slack.com/commands/T0123ABCD/1/abc",
}


async def test_valid_request_is_queued_in_its_workspace_group(make_queue: QueueFactory) -> None:
    """A valid request becomes one waiting job in its workspace's group, with a direct request's priority."""
    queue = make_queue("ai-responses")
    added = await queue_ai_response(queue, VALID, job_id="123.456.abc")
    job = await queue.get(added.job_id)
    assert job is not None
    assert job.group == "T0123ABCD"
    assert job.priority == DIRECT_PRIORITY
    assert job.cost > 1024
    assert AIResponseJobData.model_validate(job.data).trigger is TriggerKind.SLASH_COMMAND


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workspace_id": "not a team"}, "workspace_id"),
        ({"trigger_text": ""}, "trigger_text"),
        ({"trigger_text": "x" * 4001}, "trigger_text"),
        ({"trigger": "telepathy"}, "trigger"),
        ({"message_ts": "yesterday"}, "message_ts"),
        ({"response_url": "ftp://example.com/x"}, "response_url"),
        ({"bot_token": "xoxb-should-never-be-here"}, "bot_token"),
    ],
)
async def test_invalid_request_raises_a_clear_error_and_writes_nothing(
    make_queue: QueueFactory, change: dict[str, str], field: str
) -> None:
    """Invalid data raises InvalidJobDataError naming the field, and nothing is written to Redis."""
    queue = make_queue("ai-responses")
    with pytest.raises(InvalidJobDataError, match=field):
        await queue_ai_response(queue, {**VALID, **change}, job_id="123.456.abc")
    assert await queue.redis.keys(f"{queue.keys.tag}*") == []


async def test_control_characters_are_dropped_and_unicode_round_trips(make_queue: QueueFactory) -> None:
    """Emoji and accents survive the queue unchanged; control characters are stripped before they are stored."""
    queue = make_queue("ai-responses")
    text = "Café 🚀 naïve — 日本語\x00\x07 ok\nnext line"
    added = await queue_ai_response(queue, {**VALID, "trigger_text": text})
    [job] = await queue.get_jobs(JobState.WAITING)
    assert job.id == added.job_id
    assert job.data["trigger_text"] == "Café 🚀 naïve — 日本語 ok\nnext line"


def test_passive_triggers_wait_behind_direct_ones() -> None:
    """Thread, reply and watched-conversation triggers are passive; the rest are direct requests and go first."""
    passive = {TriggerKind.THREAD, TriggerKind.REPLY, TriggerKind.WATCHED_MENTION, TriggerKind.WATCHED_THREAD}
    assert {t for t in TriggerKind if not t.direct} == passive | {TriggerKind.WATCHED_DM}
    assert DIRECT_PRIORITY < PASSIVE_PRIORITY


def test_cost_estimate_bounds_an_unread_thread_and_the_output() -> None:
    """A job in a thread not read yet is charged a full context; the output cap is always included."""
    data = AIResponseJobData.model_validate(VALID)
    in_thread = AIResponseJobData.model_validate({**VALID, "thread_ts": "1700000000.000100"})
    assert estimate_cost(in_thread, 500) - estimate_cost(data, 500) == CONTEXT_MAX_CHARS // 4
    assert estimate_cost(data, 2000) - estimate_cost(data, 500) == 1500


def test_try_prints_a_delivered_draft_with_no_credentials(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """`slack-backend try "hello"` with no Slack or Anthropic credentials prints the delivered, labelled draft."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", "try", "hello"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ack: HTTP 200" in done.stdout
    assert "Drafting a reply" in done.stdout.split("\n")[0], "the ack is the progress note"
    assert "progress:" not in done.stdout, "no second note repeats the ack"
    assert "delivered ephemeral message:" in done.stdout
    assert "[offline draft - no ANTHROPIC_API_KEY set]" in done.stdout
    assert "hello" in done.stdout.split("delivered ephemeral message:")[1]


def test_mention_job_data_with_an_instruction_and_old_data_both_parse() -> None:
    """A thread mention parses with an instruction and no trigger text; data queued before either change still does."""
    old = {"workspace_id": "T1", "user_id": "U1", "channel_id": "C1", "trigger": "mention", "trigger_text": "hi"}
    assert AIResponseJobData.model_validate(old).instruction is None
    thread = {**old, "trigger_text": "", "thread_ts": "1.2", "instruction": "say no"}
    parsed = AIResponseJobData.model_validate(thread)
    assert (parsed.replies_to_thread, parsed.instruction) == (True, "say no")
    with pytest.raises(ValueError, match="no thread to reply to"):
        AIResponseJobData.model_validate({**old, "trigger_text": ""})


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.slack.com/commands/T1/2/abc", True),
        ("https://hooks.slack-gov.com/actions/T1/2/abc", True),
        ("http://127.0.0.1:9999/response/x", True),
        ("https://evil.example/hook", False),
        ("http://hooks.slack.com/commands/T1/2/abc", False),
        ("http://localhost.evil.example/x", False),
        ("http://localhost@evil.example/x", False),
        ("http://127.0.0.1.nip.io/x", False),
    ],
)
def test_job_data_response_url_is_a_slack_hook_or_loopback(url: str, ok: bool) -> None:
    """Job data takes a response_url only on Slack's hook hosts (https) or loopback, checked as a URL, not a prefix."""
    data = {"workspace_id": "T1", "user_id": "U1", "channel_id": "C1", "trigger": "slash_command", "trigger_text": "x"}
    if ok:
        assert AIResponseJobData.model_validate({**data, "response_url": url}).response_url == url
    else:
        with pytest.raises(ValueError, match="response_url"):
            AIResponseJobData.model_validate({**data, "response_url": url})
