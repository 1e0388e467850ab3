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
import re
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import RateLimited
from .logs import log_event
from .store import ratelimit as store

if TYPE_CHECKING:
    from .registry import JobType
    from .store.claim import Claimed
    from .store.jobs import NewJob

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86_400,
    "day": 86_400,
    "days": 86_400,
}
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{0,6})\s*([A-Za-z]+)\s*")
_PATH = re.compile(r"payload(\.[A-Za-z0-9_-]{1,100}){1,8}")
MAX_WINDOW_SECONDS = 31 * 86_400


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` events per ``seconds``."""

    limit: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.seconds}s"


def parse_rate(text: str | Rate) -> Rate:
    """``"50/hour"``, ``"10/15min"``, ``"1000/day"`` → Rate; ValueError otherwise."""
    if isinstance(text, Rate):
        return text
    match = _RATE.fullmatch(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a rate like 50/hour, 10/15min or 1000/day")
    limit, seconds = int(match.group(1)), int(match.group(2) or 1) * unit
    if not 1 <= limit <= 1_000_000_000 or not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"{text!r}: the limit must be ≥ 1 and the window 1 s to 31 days")
    return Rate(limit, seconds)


def parse_rates(text: str) -> dict[str, Rate]:
    """``"email.ses=50/hour,sms.send=20/hour"`` → {type: Rate}."""
    rates: dict[str, Rate] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, rate = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not type=rate (e.g. email.ses=50/hour)")
        rates[name.strip()] = parse_rate(rate)
    return rates


def parse_key(rate_key: str | None) -> tuple[str, ...] | None:
    """``"payload.userId"`` → ("userId",); None: the whole type is one bucket."""
    if rate_key is None:
        return None
    if not _PATH.fullmatch(rate_key):
        raise ValueError(f"rate_key {rate_key!r} must be a payload path like payload.userId")
    return tuple(rate_key.split(".")[1:])


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
