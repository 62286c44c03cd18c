"""The error a Slack listener raises when Redis did not take its job, shared by the edge's listener modules."""

from __future__ import annotations


class QueueUnavailableError(Exception):
    """Redis did not take the job; the request is answered with a 5xx so Slack delivers it again."""
