"""Dead-letter digest statements: what just failed, and the digest job still waiting to be sent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..schema import jobs
from .clock import now_plus

# Rows looked at for the open digest: a few, in case rows Sluice did not make share its prefix.
DIGEST_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class FailedJob:
    id: uuid.UUID
    type: str
    tenant_id: str | None
    last_error: str | None


def failed_jobs(
    conn: sa.Connection, ids: Sequence[uuid.UUID], exclude_type: str, limit: int
) -> tuple[int, list[FailedJob]]:
    """(how many of ``ids`` are failed jobs of another type than ``exclude_type``, the first
    ``limit`` of them). Payloads are never read."""
    where = [jobs.c.id.in_(list(ids)), jobs.c.status == "failed", jobs.c.type != exclude_type]
    count = int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
    if count == 0:
        return 0, []
    stmt = (
        sa.select(jobs.c.id, jobs.c.type, jobs.c.tenant_id, jobs.c.last_error)
        .where(*where)
        .order_by(jobs.c.id)
        .limit(limit)
    )
    return count, [FailedJob(*row) for row in conn.execute(stmt)]


def open_digest(
    conn: sa.Connection, type: str, key_prefix: str, priority: int, within_seconds: float
) -> tuple[uuid.UUID, dict[str, Any]] | None:
    """The digest job Sluice opened and no drain claimed yet (locked until the caller commits), or
    None. Only a digest Sluice made counts: no tenant, due within ``within_seconds`` (a digest
    parked years ahead is no digest), and the idempotency key ``key_prefix`` + its own id, which
    nobody can choose before the id exists. Digests have a priority of their own, so the claim
    index finds them among any number of pending jobs."""
    dialect = conn.dialect.name
    stmt = (
        sa.select(jobs.c.id, jobs.c.payload, jobs.c.idempotency_key)
        .where(
            jobs.c.status == "pending",
            jobs.c.priority == priority,
            jobs.c.type == type,
            jobs.c.tenant_id.is_(None),
            jobs.c.run_at <= now_plus(dialect, within_seconds),
            jobs.c.idempotency_key.startswith(key_prefix, autoescape=True),
        )
        .order_by(jobs.c.id.desc())
        .limit(DIGEST_CANDIDATES)
        .with_for_update()
    )
    for row in conn.execute(stmt):
        if row.idempotency_key == digest_key(key_prefix, row.id):
            return row.id, row.payload
    return None


def digest_key(key_prefix: str, job_id: uuid.UUID) -> str:
    """The idempotency key of the digest whose id is ``job_id``."""
    return f"{key_prefix}{job_id}"


def set_payload(conn: sa.Connection, job_id: uuid.UUID, payload: dict[str, Any]) -> bool:
    """Replace a still-pending job's payload (False if a drain claimed it meanwhile)."""
    stmt = sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "pending").values(payload=payload)
    return bool(conn.execute(stmt).rowcount)
