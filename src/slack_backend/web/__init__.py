"""The web layer, Slack in: the Starlette app, the Bolt listeners that queue drafts, health probes and admin."""

from slack_backend.web.app import MAX_SLACK_BODY_BYTES, SLACK_EVENTS_PATH, WebState, create_app, web_state

__all__ = ["MAX_SLACK_BODY_BYTES", "SLACK_EVENTS_PATH", "WebState", "create_app", "web_state"]
