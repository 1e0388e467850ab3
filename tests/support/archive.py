"""Retention in tests: finished jobs of a chosen age, and the rows the (moto) S3 archive holds."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from lib import Queue, aws
from lib.retention import decode_rows
from lib.schema import jobs
from lib.store.clock import now_plus

BUCKET = "sluice-archive-test"
DAY = 86_400


def make_job(
    queue: Queue, status: str, age: float | None = None, *, type: str = "noop", tenant: str | None = None
) -> str:
    """A job in ``status`` whose finishedAt is ``age`` seconds before the database's now."""
    job = queue.enqueue(type, {} if type == "noop" else {"n": 1}, tenant_id=tenant)
    values: dict[str, Any] = {"status": status, "attempts": 1}
    if age is not None:
        finished = now_plus(queue.dialect, -age)
        values.update(finished_at=finished, started_at=finished)
    if status == "completed":
        values["result"] = {"ok": True}
    if status == "failed":
        values["last_error"] = "RuntimeError: boom"
    with queue.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == uuid.UUID(job.id)).values(**values))
    return job.id


def archived_rows(prefix: str = "sluice/archive/") -> tuple[list[str], list[dict[str, Any]]]:
    s3 = aws.client("s3", "us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    rows = [row for key in keys for row in decode_rows(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())]
    return keys, sorted(rows, key=lambda r: r["id"])
