"""The web layer: the Starlette app that takes Slack's requests and answers health probes."""

from slack_backend.web.app import MAX_SLACK_BODY_BYTES, SLACK_EVENTS_PATH, WebState, create_app, web_state

__all__ = ["MAX_SLACK_BODY_BYTES", "SLACK_EVENTS_PATH", "WebState", "create_app", "web_state"]
