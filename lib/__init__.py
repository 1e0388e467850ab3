"""Sluice: a job queue kept in PostgreSQL or SQLite and drained by cron.

import lib
q = lib.Queue.from_url("sqlite:///.data/demo.db"); q.migrate()
q.enqueue("noop"); print(q.drain())
"""

from .context import JobContext
from .errors import (
    Conflict,
    NotFound,
    PermanentError,
    RetryLater,
    SluiceError,
    Unavailable,
    UnknownJobType,
    ValidationError,
)
from .models import DrainSummary, Enqueued, Job, JobSpec, QueueStatus
from .queue import Queue
from .registry import JobType, Registry, job, registry
from .retry import Backoff

__all__ = [
    "Backoff",
    "Conflict",
    "DrainSummary",
    "Enqueued",
    "Job",
    "JobContext",
    "JobSpec",
    "JobType",
    "NotFound",
    "PermanentError",
    "Queue",
    "QueueStatus",
    "Registry",
    "RetryLater",
    "SluiceError",
    "Unavailable",
    "UnknownJobType",
    "ValidationError",
    "job",
    "registry",
]
