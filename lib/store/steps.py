"""Reading a job's durable steps for people (API, dashboard); the drain's fenced step statements
live in claim.py with the other writes after a claim."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from ..schema import jobs


def job_steps(conn: sa.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    """The job's stored steps, {name: {"result", "finishedAt"}} ({} for none or no such job)."""
    value = conn.execute(sa.select(jobs.c.steps).where(jobs.c.id == job_id)).scalar()
    return dict(value or {})
