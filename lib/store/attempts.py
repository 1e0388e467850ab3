"""A job's attempt history: one row per attempt, written next to the drain's outcomes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from ..schema import attempts, jobs
from .claim import LEASE_EXPIRED
from .clock import now

AttemptOutcome = Literal["completed", "retried", "failed", "lease_expired", "released", "deferred"]
MAX_TRACEBACK_CHARS = 8000


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """How one attempt of one job went. ``traceback`` holds the handler's frames only."""

    job_id: uuid.UUID
    attempt: int
    started_at: datetime | None
    finished_at: datetime
    outcome: AttemptOutcome
    error: str | None = None
    traceback: str | None = None

    def to_wire(self) -> dict[str, Any]:
        duration = None
        if self.started_at is not None:
            duration = max(0, round((self.finished_at - self.started_at).total_seconds() * 1000))
        return {
            "attempt": self.attempt,
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "durationMs": duration,
            "outcome": self.outcome,
            "error": self.error,
            "traceback": self.traceback,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def record_attempts(conn: sa.Connection, rows: Sequence[AttemptRecord]) -> int:
    """Insert a batch's attempts in one statement, in the caller's transaction (the one that
    writes the outcomes). Rows of jobs deleted meanwhile are skipped: on PostgreSQL FOR KEY SHARE
    waits for a delete under way, so no attempt outlives its job (an erased tenant's included)."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    doc = json.dumps(
        [
            {
                "j": row.job_id.hex if dialect == "sqlite" else str(row.job_id),
                "a": row.attempt,
                "s": _stored_time(row.started_at, dialect),
                "f": _stored_time(row.finished_at, dialect),
                "o": row.outcome,
                "e": row.error,
                "t": row.traceback,
            }
            for row in rows
        ]
    )
    statement = _INSERT_PG if dialect == "postgresql" else _INSERT_SQLITE
    return conn.execute(statement, {"rows": doc}).rowcount


def _stored_time(moment: datetime | None, dialect: str) -> str | None:
    if moment is None:
        return None
    if dialect == "sqlite":
        # The text form UTCDateTime stores on SQLite (naive UTC, microseconds), so rows sort as text.
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment.isoformat()


_INSERT_PG = sa.text(
    """
    INSERT INTO sluice_attempts (job_id, attempt, started_at, finished_at, outcome, error, traceback)
    SELECT v.j, v.a, v.s, v.f, v.o, v.e, v.t
    FROM json_to_recordset(CAST(:rows AS json))
      AS v(j uuid, a int, s timestamptz, f timestamptz, o text, e text, t text)
    WHERE EXISTS (SELECT 1 FROM sluice_jobs WHERE id = v.j FOR KEY SHARE)
    """
)
_INSERT_SQLITE = sa.text(
    """
    INSERT INTO sluice_attempts (job_id, attempt, started_at, finished_at, outcome, error, traceback)
    SELECT json_extract(value, '$.j'), json_extract(value, '$.a'), json_extract(value, '$.s'),
           json_extract(value, '$.f'), json_extract(value, '$.o'), json_extract(value, '$.e'),
           json_extract(value, '$.t')
    FROM json_each(:rows)
    WHERE EXISTS (SELECT 1 FROM sluice_jobs WHERE id = json_extract(value, '$.j'))
    """
)


def delete_attempts(conn: sa.Connection, job_ids: Sequence[uuid.UUID]) -> int:
    """The history of jobs being deleted, in the transaction that deletes them."""
    if not job_ids:
        return 0
    if conn.dialect.name == "postgresql":
        # One array parameter: an IN list of 1000 bound ids cost more than the delete itself.
        ids = "{" + ",".join(map(str, job_ids)) + "}"  # array text: cheaper than adapting each UUID
        return conn.execute(_DELETE_PG, {"ids": ids}).rowcount
    return conn.execute(sa.delete(attempts).where(attempts.c.job_id.in_(job_ids))).rowcount


_DELETE_PG = sa.text("DELETE FROM sluice_attempts WHERE job_id = ANY(CAST(:ids AS uuid[]))")


_RECLAIM_TURN = sa.text("SELECT pg_advisory_xact_lock(hashtext('sluice.reclaim_expired'))")


def record_expired_leases(conn: sa.Connection) -> int:
    """A ``lease_expired`` attempt for each job whose lease ran out; call it in the reclaim's
    transaction, just before the reclaim. On PostgreSQL overlapping drains take turns for this
    and the reclaim (a transaction-scoped advisory lock: two drains locking the same expired rows
    in different orders deadlocked), and FOR UPDATE (in id order) keeps the rows for the reclaim,
    so no attempt is written twice. SQLite serialises writers anyway."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(_RECLAIM_TURN)
    clock = now(dialect)
    expired = sa.select(
        jobs.c.id,
        jobs.c.attempts,
        jobs.c.started_at,
        clock,
        sa.literal("lease_expired"),
        sa.literal(LEASE_EXPIRED),
    ).where(jobs.c.status == "processing", jobs.c.lease_expires_at < clock)
    if dialect == "postgresql":
        expired = expired.order_by(jobs.c.id).with_for_update(of=jobs)
    columns = ["job_id", "attempt", "started_at", "finished_at", "outcome", "error"]
    return conn.execute(sa.insert(attempts).from_select(columns, expired)).rowcount


def list_attempts(conn: sa.Connection, job_id: uuid.UUID) -> list[AttemptRecord]:
    """Oldest first."""
    stmt = sa.select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id)
    return [
        AttemptRecord(
            job_id=row.job_id,
            attempt=row.attempt,
            started_at=row.started_at,
            finished_at=row.finished_at,
            outcome=row.outcome,
            error=row.error,
            traceback=row.traceback,
        )
        for row in conn.execute(stmt)
    ]
