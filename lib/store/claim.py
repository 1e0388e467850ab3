"""The drain's statements: reclaim, claim a batch, record outcomes, release. A few per batch.

Every write after a claim is fenced on id + claim_token + status='processing', so a worker whose
lease expired and was taken over changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from ..retry import Backoff
from ..schema import jobs
from .clock import now, now_plus

LEASE_EXPIRED = "lease expired: the worker did not finish within the job's timeout plus grace"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this drain holds the lease on."""

    id: uuid.UUID
    type: str
    payload: Any
    attempt: int
    max_attempts: int
    timeout_seconds: int
    backoff: Backoff
    tenant_id: str | None
    correlation_id: str
    priority: int
    run_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. ``pending`` = retry after ``delay``; ``refund`` uncounts the attempt."""

    id: uuid.UUID
    status: Literal["completed", "pending", "failed"]
    result: str | None = None  # JSON text
    error: str | None = None
    delay: float = 0.0
    refund: int = 0


@dataclass(frozen=True, slots=True)
class Reclaimed:
    retried: int
    failed_ids: list[uuid.UUID]


def _fence(token: uuid.UUID) -> list[sa.ColumnElement[bool]]:
    return [jobs.c.claim_token == token, jobs.c.status == "processing"]


def reclaim_expired(conn: sa.Connection) -> Reclaimed:
    """Jobs whose lease ran out (their worker crashed or hung): retry now, or fail if exhausted."""
    dialect = conn.dialect.name
    clock = now(dialect)
    expired = [jobs.c.status == "processing", jobs.c.lease_expires_at < clock]
    released = {"lease_expires_at": None, "claim_token": None, "last_error": LEASE_EXPIRED}
    failed = conn.execute(
        sa.update(jobs)
        .where(*expired, jobs.c.attempts >= jobs.c.max_attempts)
        .values(status="failed", finished_at=clock, **released)
        .returning(jobs.c.id)
    ).scalars()
    failed_ids = list(failed)
    # The lease itself (timeout + grace) was the wait, so the retry is due at once.
    retried = conn.execute(
        sa.update(jobs).where(*expired).values(status="pending", run_at=clock, **released)
    ).rowcount
    return Reclaimed(retried=retried, failed_ids=failed_ids)


_CLAIM_RETURNS = (
    jobs.c.id,
    jobs.c.type,
    jobs.c.payload,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.timeout_seconds,
    jobs.c.backoff_strategy,
    jobs.c.backoff_delay,
    jobs.c.backoff_max,
    jobs.c.tenant_id,
    jobs.c.correlation_id,
    jobs.c.priority,
    jobs.c.run_at,
)


def claim_batch(conn: sa.Connection, limit: int, token: uuid.UUID, grace: int) -> list[Claimed]:
    """Claim up to ``limit`` due jobs in one statement, highest priority first, then FIFO."""
    dialect = conn.dialect.name
    clock = now(dialect)
    # SKIP LOCKED lets overlapping drains take disjoint batches; SQLite serialises writers instead
    # (BEGIN IMMEDIATE) and ignores the clause.
    due = (
        sa.select(jobs.c.id)
        .where(jobs.c.status == "pending", jobs.c.run_at <= clock)
        .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id.in_(due.scalar_subquery()))
        .values(
            status="processing",
            attempts=jobs.c.attempts + 1,
            started_at=clock,
            finished_at=None,
            lease_expires_at=now_plus(dialect, jobs.c.timeout_seconds + grace),
            claim_token=token,
        )
        .returning(*_CLAIM_RETURNS)
    )
    # RETURNING has no order; run in claim order.
    rows = sorted(conn.execute(stmt).all(), key=lambda r: (-r.priority, r.run_at, r.id))
    return [
        Claimed(
            r.id,
            r.type,
            r.payload,
            r.attempts,
            r.max_attempts,
            r.timeout_seconds,
            Backoff(r.backoff_strategy, r.backoff_delay, r.backoff_max),
            r.tenant_id,
            r.correlation_id,
            r.priority,
            r.run_at,
        )
        for r in rows
    ]


_RECORD_PG = sa.text(
    """
    UPDATE sluice_jobs AS j SET
      status = v.status,
      result = CASE WHEN v.status = 'completed' THEN v.result ELSE j.result END,
      last_error = COALESCE(v.error, j.last_error),
      attempts = j.attempts - v.refund,
      run_at = CASE WHEN v.status = 'pending'
                    THEN now() + make_interval(secs => v.delay) ELSE j.run_at END,
      finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,
      lease_expires_at = NULL,
      claim_token = NULL
    FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:results AS jsonb[]),
                CAST(:errors AS text[]), CAST(:delays AS float8[]), CAST(:refunds AS int[]))
         AS v(id, status, result, error, delay, refund)
    WHERE j.id = v.id AND j.claim_token = :token AND j.status = 'processing'
    RETURNING j.id
    """
)


def record_outcomes(conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
    """Write every outcome of a batch, fenced; returns the ids that were actually written."""
    if not outcomes:
        return set()
    if conn.dialect.name == "postgresql":
        params = {
            "ids": [o.id for o in outcomes],
            "statuses": [o.status for o in outcomes],
            "results": [o.result for o in outcomes],
            "errors": [o.error for o in outcomes],
            "delays": [o.delay for o in outcomes],
            "refunds": [o.refund for o in outcomes],
            "token": token,
        }
        return set(conn.execute(_RECORD_PG, params).scalars())
    return _record_each(conn, token, outcomes)


def _record_each(conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome]) -> set[uuid.UUID]:
    # SQLite is in-process: a statement per job costs microseconds, not a round trip.
    dialect = conn.dialect.name
    clock = now(dialect)
    written: set[uuid.UUID] = set()
    for o in outcomes:
        values: dict[str, Any] = {"status": o.status, "lease_expires_at": None, "claim_token": None}
        if o.error is not None:
            values["last_error"] = o.error
        if o.refund:
            values["attempts"] = jobs.c.attempts - o.refund
        if o.status == "pending":
            values.update(run_at=now_plus(dialect, o.delay), finished_at=None)
        else:
            values["finished_at"] = clock
        if o.status == "completed":
            values["result"] = sa.type_coerce(sa.literal(o.result, sa.Text()), sa.Text())
        stmt = sa.update(jobs).where(jobs.c.id == o.id, *_fence(token)).values(**values)
        if conn.execute(stmt).rowcount:
            written.add(o.id)
    return written


def release(conn: sa.Connection, token: uuid.UUID, ids: Sequence[uuid.UUID]) -> int:
    """Give back claimed jobs that were never started: pending again, the attempt uncounted."""
    if not ids:
        return 0
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id.in_(ids), *_fence(token))
        .values(
            status="pending",
            attempts=jobs.c.attempts - 1,
            started_at=None,
            lease_expires_at=None,
            claim_token=None,
        )
    )
    return conn.execute(stmt).rowcount


def set_progress(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID, percent: int) -> bool:
    stmt = sa.update(jobs).where(jobs.c.id == job_id, *_fence(token)).values(progress=percent)
    return bool(conn.execute(stmt).rowcount)


def result_json(value: Any) -> str | None:
    """A handler's return value as JSON text; raises TypeError/ValueError if it isn't JSON-able."""
    if value is None:
        return None
    return json.dumps(value, allow_nan=False, separators=(",", ":"))
