"""The job engine: a Redis queue with atomic Lua transitions, global limits, fair groups and leases.

Generic: it imports nothing from the rest of the package.
"""

from typing import TYPE_CHECKING

from slack_backend.queue._lazy import lazy_exports

if TYPE_CHECKING:
    from slack_backend.queue.connection import (
        RedisClient,
        ServerSafety,
        create_redis,
        ping,
        server_safety,
        warn_unsafe_server,
    )
    from slack_backend.queue.errors import (
        InvalidJobDataError,
        JobNotFoundError,
        JobStateError,
        LeaseLostError,
        NotReplicatedError,
        QueueError,
        RetryAfter,
        StalledError,
        UnrecoverableError,
    )
    from slack_backend.queue.events import EVENT_NAMES, Hook, JobEvent
    from slack_backend.queue.gate import GateStats, RateGate
    from slack_backend.queue.job import Backoff, BackoffStrategy, Job, JobOptions, JobState
    from slack_backend.queue.limits import GroupSettings, QueueLimits, RateLimit, TokenBudget
    from slack_backend.queue.log_context import merge_job_context
    from slack_backend.queue.queue import AddResult, BulkJob, GroupInfo, JobDefaults, Queue
    from slack_backend.queue.target import RedisTarget
    from slack_backend.queue.worker import KeepJobs, Processor, Worker, WorkerStats

# Each name loads its module on first use (PEP 562): the command line's light commands and the settings import a
# submodule without paying for the whole package (docs/performance.md, "Start-up").
_MODULES: dict[str, tuple[str, ...]] = {
    "slack_backend.queue.connection": (
        "RedisClient",
        "ServerSafety",
        "create_redis",
        "ping",
        "server_safety",
        "warn_unsafe_server",
    ),
    "slack_backend.queue.errors": (
        "InvalidJobDataError",
        "JobNotFoundError",
        "JobStateError",
        "LeaseLostError",
        "NotReplicatedError",
        "QueueError",
        "RetryAfter",
        "StalledError",
        "UnrecoverableError",
    ),
    "slack_backend.queue.events": ("EVENT_NAMES", "Hook", "JobEvent"),
    "slack_backend.queue.gate": ("GateStats", "RateGate"),
    "slack_backend.queue.job": ("Backoff", "BackoffStrategy", "Job", "JobOptions", "JobState"),
    "slack_backend.queue.limits": ("GroupSettings", "QueueLimits", "RateLimit", "TokenBudget"),
    "slack_backend.queue.log_context": ("merge_job_context",),
    "slack_backend.queue.queue": ("AddResult", "BulkJob", "GroupInfo", "JobDefaults", "Queue"),
    "slack_backend.queue.target": ("RedisTarget",),
    "slack_backend.queue.worker": ("KeepJobs", "Processor", "Worker", "WorkerStats"),
}

__all__ = [
    "EVENT_NAMES",
    "AddResult",
    "Backoff",
    "BackoffStrategy",
    "BulkJob",
    "GateStats",
    "GroupInfo",
    "GroupSettings",
    "Hook",
    "InvalidJobDataError",
    "Job",
    "JobDefaults",
    "JobEvent",
    "JobNotFoundError",
    "JobOptions",
    "JobState",
    "JobStateError",
    "KeepJobs",
    "LeaseLostError",
    "NotReplicatedError",
    "Processor",
    "Queue",
    "QueueError",
    "QueueLimits",
    "RateGate",
    "RateLimit",
    "RedisClient",
    "RedisTarget",
    "RetryAfter",
    "ServerSafety",
    "StalledError",
    "TokenBudget",
    "UnrecoverableError",
    "Worker",
    "WorkerStats",
    "create_redis",
    "merge_job_context",
    "ping",
    "server_safety",
    "warn_unsafe_server",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)
