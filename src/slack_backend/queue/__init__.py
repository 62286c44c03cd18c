"""The job engine: a Redis queue with atomic Lua transitions, global limits, fair groups and leases.

Generic: it imports nothing from the rest of the package.
"""

from slack_backend.queue.connection import (
    RedisClient,
    RedisTarget,
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
from slack_backend.queue.queue import AddResult, BulkJob, GroupInfo, JobDefaults, Queue
from slack_backend.queue.worker import KeepJobs, Processor, Worker, WorkerStats

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
    "ping",
    "server_safety",
    "warn_unsafe_server",
]
