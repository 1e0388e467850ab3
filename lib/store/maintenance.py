"""Retention and erasure statements: bounded batches, never pending or processing jobs.

Each delete takes at most ``limit`` ids (``DELETE … WHERE id IN (SELECT id … LIMIT n)``): short
transactions, short locks, no table rewrite. The outer WHERE repeats the conditions, so a job
retried between the subquery and the delete is re-checked and kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ..schema import attempts, drains, jobs
from .attempts import delete_attempts
from .clock import now_plus

FINISHED = ("completed", "failed", "cancelled")


def _old_enough(dialect: str, status: str, age: int, per_type: Mapping[str, int]) -> sa.ColumnElement[bool]:
    """status = ``status`` and finishedAt ≤ now − age, with ``per_type`` ages for some types."""
    if status not in FINISHED:
        raise ValueError(f"retention never touches {status!r} jobs")

    def cutoff(seconds: int) -> sa.ColumnElement[bool]:
        return jobs.c.finished_at <= now_plus(dialect, -float(seconds))

    by_age = sa.and_(jobs.c.type.not_in(list(per_type)), cutoff(age)) if per_type else cutoff(age)
    arms = [by_age, *(sa.and_(jobs.c.type == name, cutoff(s)) for name, s in sorted(per_type.items()))]
    return sa.and_(jobs.c.status == status, jobs.c.finished_at.is_not(None), sa.or_(*arms))


def _batch(
    table: sa.Table, where: sa.ColumnElement[bool], limit: int, *, skip_locked: bool = True
) -> sa.Select[Any]:
    """The ids of one batch, picked once: a plain ``IN (SELECT … LIMIT n)`` can be re-run per
    outer row by PostgreSQL (a semi-join rescan) and then deletes more than ``n``. Retention
    skips rows another transaction holds; an erase waits for them (``skip_locked=False``)."""
    picked = (
        sa.select(table.c.id)
        .where(where)
        .limit(limit)
        .with_for_update(skip_locked=skip_locked)
        .cte("batch")
        .prefix_with("MATERIALIZED")
    )
    return sa.select(picked.c.id)


def count_finished(conn: sa.Connection, status: str, age: int, per_type: Mapping[str, int]) -> int:
    where = _old_enough(conn.dialect.name, status, age, per_type)
    return int(conn.execute(sa.select(sa.func.count()).where(where)).scalar_one())


def _delete_batch(
    conn: sa.Connection,
    where: sa.ColumnElement[bool],
    limit: int,
    full_rows: bool,
    *,
    skip_locked: bool = True,
) -> list[dict[str, Any]]:
    stmt = sa.delete(jobs).where(jobs.c.id.in_(_batch(jobs, where, limit, skip_locked=skip_locked)), where)
    returned = stmt.returning(*jobs.c) if full_rows else stmt.returning(jobs.c.id)
    if conn.dialect.name == "postgresql":
        # The jobs' attempts go in the same statement (a data-modifying CTE): no extra round trip.
        gone = returned.cte("gone")
        history = sa.delete(attempts).where(attempts.c.job_id.in_(sa.select(gone.c.id))).cte("history")
        return [dict(row._mapping) for row in conn.execute(sa.select(gone).add_cte(history))]
    rows = [dict(row._mapping) for row in conn.execute(returned)]
    delete_attempts(conn, [row["id"] for row in rows])
    return rows


def delete_finished(
    conn: sa.Connection, status: str, age: int, per_type: Mapping[str, int], limit: int, *, full_rows: bool
) -> list[dict[str, Any]]:
    """Delete up to ``limit`` old ``status`` jobs; returns their rows (all columns if
    ``full_rows``, for the archive, else just ids). The caller's commit makes it final."""
    return _delete_batch(conn, _old_enough(conn.dialect.name, status, age, per_type), limit, full_rows)


def _erasable(tenant: str) -> sa.ColumnElement[bool]:
    return sa.and_(jobs.c.tenant_id == tenant, jobs.c.status != "processing")


def delete_tenant_jobs(conn: sa.Connection, tenant: str, limit: int, *, full_rows: bool = False) -> int:
    """Delete up to ``limit`` of a tenant's jobs that are not processing. Rows a cleanup holds
    (archiving them) are waited for, never skipped: once it commits they are gone, and in the
    archive, where the erase looks next. A batch may so come back short with rows left."""
    return len(_delete_batch(conn, _erasable(tenant), limit, full_rows, skip_locked=False))


def count_tenant_erasable(conn: sa.Connection, tenant: str) -> int:
    """The tenant's jobs an erase would still delete."""
    return int(conn.execute(sa.select(sa.func.count()).where(_erasable(tenant))).scalar_one())


def count_tenant_processing(conn: sa.Connection, tenant: str) -> int:
    stmt = sa.select(sa.func.count()).where(jobs.c.tenant_id == tenant, jobs.c.status == "processing")
    return int(conn.execute(stmt).scalar_one())


def trim_drains(conn: sa.Connection, older_than_seconds: int, limit: int) -> int:
    """Delete up to ``limit`` drain records older than the given age."""
    old = drains.c.at < now_plus(conn.dialect.name, -float(older_than_seconds))
    stmt = sa.delete(drains).where(drains.c.id.in_(_batch(drains, old, limit)), old)
    return int(conn.execute(stmt).rowcount)


@contextmanager
def archive_lock(conn: sa.Connection) -> Iterator[None]:
    """Hold Sluice's archive-rewrite lock on ``conn`` (an autocommit connection, so no transaction
    stays open meanwhile) until the block ends; PostgreSQL only (a no-op on SQLite). Erases that
    rewrite the same archive object one after another never undo each other's removals."""
    if conn.dialect.name != "postgresql":
        yield
        return
    key = {"key": "sluice.archive.rewrite"}
    conn.execute(sa.text("SELECT pg_advisory_lock(hashtext(:key))"), key)
    try:
        yield
    finally:
        conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:key))"), key)
