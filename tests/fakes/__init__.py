"""Loopback fakes of the Anthropic and Slack HTTP APIs, for driving the real SDK clients in tests."""

from .anthropic_server import Behaviour, FakeAnthropic, RecordedRequest
from .slack_server import FakeSlack, SlackCall, SlackReply

__all__ = ["Behaviour", "FakeAnthropic", "FakeSlack", "RecordedRequest", "SlackCall", "SlackReply"]
