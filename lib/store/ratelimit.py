"""Rate-limit statements: both count rows of sluice_jobs itself, so there is no counter to drift.

On PostgreSQL a transaction-level advisory lock on the bucket serialises check-and-act between
concurrent drains (released by the commit, so a pooled connection never keeps it); SQLite already
serialises writers (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from ..schema import UTCDateTime, jobs
from .clock import now, now_plus

# Ids are UUIDv7 from the app servers' clocks; this much slack covers their skew.
ID_CLOCK_SLACK_SECONDS = 3600


def lock(conn: sa.Connection, bucket: str) -> None:
    """Hold the bucket until this transaction ends (PostgreSQL; a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:bucket))"), {"bucket": bucket})


def _key(table: Any, path: tuple[str, ...]) -> ColumnElement[Any]:
    return table.c.payload[path].as_string()  # type: ignore[no-any-return]


def _utc(expr: Any) -> ColumnElement[datetime]:
    # Aggregates lose the column type on SQLite; coerce so they come back as aware datetimes.
    return sa.type_coerce(expr, UTCDateTime())


def admit(
    conn: sa.Connection,
    *,
    job_id: uuid.UUID,
    token: uuid.UUID,
    type: str,
    path: tuple[str, ...] | None,
    limit: int,
    window: int,
    admitted: Sequence[uuid.UUID],
    bucket: str,
) -> float | None:
    """Admit a claimed job, or give back the seconds until a slot frees (None: run it now).

    Counts the type's jobs (same key) that started within the window and are processing,
    completed or failed (an attempt that failed may still have had its effect) — this batch's own
    claimed jobs only once admitted. A refused job's started_at is
    cleared in the same locked transaction, so the other drains stop counting it at once.
    """
    lock(conn, bucket)
    dialect = conn.dialect.name
    since = now_plus(dialect, -float(window))
    same = [
        jobs.c.type == type,
        jobs.c.started_at > since,
        # Each arm matches a partial index (running leases; finished_at of finished jobs, which is
        # never before started_at), so the count reads the window's rows, not the table.
        sa.or_(
            sa.and_(jobs.c.status == "processing", jobs.c.lease_expires_at.is_not(None)),
            sa.and_(jobs.c.status.in_(("completed", "failed")), jobs.c.finished_at > since),
        ),
        jobs.c.id != job_id,
        sa.or_(jobs.c.claim_token.is_(None), jobs.c.claim_token != token, jobs.c.id.in_(list(admitted))),
    ]
    if path is not None:
        me = jobs.alias("me")
        same.append(_key(jobs, path) == sa.select(_key(me, path)).where(me.c.id == job_id).scalar_subquery())
    stmt = sa.select(sa.func.count(), _utc(sa.func.min(jobs.c.started_at)), now(dialect)).where(*same)
    count, oldest, clock = conn.execute(stmt).one()
    if count < limit:
        return None
    conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.claim_token == token, jobs.c.status == "processing")
        .values(started_at=None)
    )
    return max(1.0, (oldest - clock).total_seconds() + window) if oldest else float(window)


def id_floor(seconds_ago: float) -> uuid.UUID:
    """The smallest UUIDv7 an app server could have made ``seconds_ago`` (less clock slack)."""
    ms = max(0, int((time.time() - seconds_ago - ID_CLOCK_SLACK_SECONDS) * 1000))
    return uuid.UUID(int=(ms & (2**48 - 1)) << 80)


def quota_wait(conn: sa.Connection, tenant: str, wanted: int, limit: int, window: int) -> int | None:
    """Seconds until ``wanted`` more jobs fit the tenant's quota (None: they fit now)."""
    lock(conn, f"sluice.quota\x1f{tenant}")
    if wanted > limit:
        return window
    dialect = conn.dialect.name
    recent = [
        jobs.c.tenant_id == tenant,
        # The id bound lets the (tenant_id, id) index skip old rows; created_at decides.
        jobs.c.id >= id_floor(window),
        jobs.c.created_at > now_plus(dialect, -float(window)),
    ]
    count = int(conn.execute(sa.select(sa.func.count()).where(*recent)).scalar_one())
    if count + wanted <= limit:
        return None
    # The slot for the last wanted job frees when the (count + wanted - limit)-th oldest ages out.
    nth = (
        sa.select(jobs.c.created_at, now(dialect).label("clock"))
        .where(*recent)
        .order_by(jobs.c.created_at)
        .offset(count + wanted - limit - 1)
        .limit(1)
    )
    row = conn.execute(nth).first()
    if row is None:
        return 1
    oldest: datetime = row.created_at
    clock: datetime = row.clock
    return max(1, math.ceil((oldest - clock).total_seconds() + window))
