"""Rate limits: how often a job type may run per key, and how much a tenant may enqueue.

``@job("email.ses", rate_limit="50/hour", rate_key="payload.userId")`` (or, for a type you don't
declare yourself, ``JOBS_RATE_LIMITS="email.ses=50/hour"``): before a claimed job runs, the drain
counts the type's jobs with the same key that started within the window; at the limit the job
goes back to pending, due when the oldest of them ages out, without counting an attempt.
``JOBS_TENANT_ENQUEUE_LIMIT="1000/hour"`` refuses a tenant's enqueue past its quota with
RateLimited (the API's 429 with Retry-After).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import RateLimited
from .logs import log_event
from .rates import Rate
from .store import ratelimit as store

if TYPE_CHECKING:
    from .registry import JobType
    from .store.claim import Claimed
    from .store.jobs import NewJob

_MISSING = object()


def key_value(payload: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a payload, or _MISSING."""
    value = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


@dataclass
class Gate:
    """One claimed batch's admissions (``Executor.gate``): None runs the job now, a number of
    seconds sends it back to pending without counting the attempt."""

    engine: sa.Engine
    token: uuid.UUID
    overrides: Mapping[str, Rate] = field(default_factory=dict)
    # Jobs of this batch admitted so far, per bucket: they count, the batch's others don't yet.
    admitted: dict[str, list[uuid.UUID]] = field(default_factory=dict)

    def __call__(self, job: Claimed, job_type: JobType) -> float | None:
        rate = self.overrides.get(job_type.name) or job_type.rate_limit
        if rate is None:
            return None
        path = job_type.rate_key
        value = key_value(job.payload, path) if path is not None else None
        if value is _MISSING or (path is not None and value is None):
            return None  # no key, no limit: a per-user limit doesn't pool keyless jobs
        bucket = f"sluice.rate\x1f{job.type}\x1f{json.dumps(value, sort_keys=True, default=str)}"
        with self.engine.begin() as conn:
            wait = store.admit(
                conn,
                job_id=job.id,
                token=self.token,
                type=job.type,
                path=path,
                limit=rate.limit,
                window=rate.seconds,
                admitted=self.admitted.get(bucket, []),
                bucket=bucket,
            )
        if wait is None:
            self.admitted.setdefault(bucket, []).append(job.id)
        else:
            log_event("job.rate_limited", jobId=str(job.id), type=job.type, retryInSeconds=round(wait, 3))
        return wait


def gate_factory(engine: sa.Engine, overrides: Mapping[str, Rate]) -> Any:
    """``Drainer.make_gate``: a fresh Gate per claimed batch."""
    return lambda token: Gate(engine, token, dict(overrides))


def enforce_tenant_quota(conn: sa.Connection, new: Sequence[NewJob], rate: Rate | None) -> None:
    """Refuse (RateLimited) an enqueue that would take a tenant past ``rate`` jobs per window.

    Runs in the enqueue's transaction: on PostgreSQL the tenant's lock is held until it commits,
    so concurrent enqueues can't both squeeze under the limit.
    """
    if rate is None:
        return
    wanted = Counter(job.tenant_id for job in new if job.tenant_id is not None)
    for tenant, count in sorted(wanted.items()):
        wait = store.quota_wait(conn, tenant, count, rate.limit, rate.seconds)
        if wait is not None:
            log_event("tenant.rate_limited", tenantId=tenant, retryAfterSeconds=wait)
            raise RateLimited(
                f"tenant {tenant!r} may enqueue {rate.limit} jobs per {rate.seconds} s; retry in {wait} s",
                wait,
            )
