"""slack-backend: Slack requests in, AI-drafted replies out, on a rate-limited Redis job engine."""

__version__ = "0.1.0"
