"""Flow control's statements: the jobs an ``after`` names, releasing or cancelling the jobs that
wait for them, and handing finished jobs' callbacks over (lib/flow.py decides when)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from ..models import Job
from ..schema import jobs
from .clock import now
from .jobs import HELD_RUN_AT, JOB_COLUMNS, to_job

# Rounds of cancelling per sweep: each round reaches one more level of dependants.
MAX_CANCEL_ROUNDS = 100
CALLBACKS_PER_SWEEP = 500


def statuses(conn: sa.Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str | None, str]]:
    """{id: (tenant, status)} of the jobs that exist among ``ids``."""
    if not ids:
        return {}
    stmt = sa.select(jobs.c.id, jobs.c.tenant_id, jobs.c.status).where(jobs.c.id.in_(list(ids)))
    return {row.id: (row.tenant_id, row.status) for row in conn.execute(stmt)}


def _deps(dialect: str) -> tuple[str, str]:
    """(the ids an ``after`` names, as rows d(value); the join of one to its job x)."""
    if dialect == "postgresql":
        return "jsonb_array_elements_text(w.after_ids) AS d(value)", "x.id = CAST(d.value AS uuid)"
    # SQLite keeps UUIDs as 32 hex digits.
    return "json_each(w.after_ids) AS d", "x.id = replace(lower(d.value), '-', '')"


def release_ready(conn: sa.Connection, only: Sequence[uuid.UUID] | None = None) -> int:
    """Make due now the held jobs none of whose dependencies is still unfinished or unsuccessful
    (a dependency no longer stored was cleaned up after it completed)."""
    dialect = conn.dialect.name
    each, match = _deps(dialect)
    clock = "now()" if dialect == "postgresql" else "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
    scope, params = _scope(dialect, only)
    stmt = sa.text(
        f"""
        UPDATE sluice_jobs SET run_at = {clock}
        WHERE id IN (
          SELECT w.id FROM sluice_jobs w
          WHERE w.status = 'pending' AND w.after_ids IS NOT NULL AND w.run_at = :held {scope}
            AND NOT EXISTS (SELECT 1 FROM {each} JOIN sluice_jobs x ON {match} WHERE x.status <> 'completed')
        )
        """
    ).bindparams(sa.bindparam("held", HELD_RUN_AT, type_=jobs.c.run_at.type))
    return conn.execute(stmt, params).rowcount


def cancel_blocked(conn: sa.Connection, only: Sequence[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Cancel the pending jobs one of whose dependencies ended failed or cancelled, naming it in
    lastError, and their dependants in turn; returns the ids cancelled."""
    dialect = conn.dialect.name
    each, match = _deps(dialect)
    cancelled: list[uuid.UUID] = []
    scope, params = _scope(dialect, only)
    for _ in range(MAX_CANCEL_ROUNDS):
        stmt = sa.text(
            f"""
            UPDATE sluice_jobs AS w SET status = 'cancelled', finished_at = {
                "now()" if dialect == "postgresql" else "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
            },
              last_error = (SELECT 'dependency ' || d.value || ' ended ' || x.status
                            FROM {each} JOIN sluice_jobs x ON {match}
                            WHERE x.status IN ('failed', 'cancelled') LIMIT 1)
            WHERE w.status = 'pending' AND w.after_ids IS NOT NULL {scope}
              AND EXISTS (SELECT 1 FROM {each} JOIN sluice_jobs x ON {match}
                          WHERE x.status IN ('failed', 'cancelled'))
            RETURNING id
            """
        ).columns(id=jobs.c.id.type)
        found = list(conn.execute(stmt, params).scalars())
        if not found:
            break
        cancelled.extend(found)
        # Dependants of these are anywhere in the queue, not only among ``only``.
        scope, params = "", {}
    return cancelled


def _scope(dialect: str, only: Sequence[uuid.UUID] | None) -> tuple[str, dict[str, object]]:
    if only is None:
        return "", {}
    values = [str(i) if dialect == "postgresql" else i.hex for i in only]
    if dialect == "postgresql":
        return "AND w.id = ANY(CAST(:only AS uuid[]))", {"only": values}
    return "AND w.id IN (SELECT value FROM json_each(:only))", {"only": json.dumps(values)}


def take_callbacks(conn: sa.Connection) -> list[Job]:
    """Finished jobs whose end has no callback yet, marked as sent (in the caller's transaction,
    with the callback jobs it inserts): a second sweep, concurrent or later, skips them."""
    # Literal SQL, the partial index's own predicate: with bound values SQLite can't prove the
    # index applies and scans the table.
    unsent = [
        sa.text("callback_url IS NOT NULL AND callback_sent_at IS NULL AND status IN ('completed', 'failed')")
    ]
    # Looked up first: nearly always none, and then the (costlier) update is not even built.
    due = list(conn.execute(sa.select(jobs.c.id).where(*unsent).limit(CALLBACKS_PER_SWEEP)).scalars())
    if not due:
        return []
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id.in_(due), *unsent)
        .values(callback_sent_at=sa.func.coalesce(jobs.c.finished_at, now(conn.dialect.name)))
        .returning(*JOB_COLUMNS)
    )
    return [to_job(row) for row in conn.execute(stmt)]


# One cheap read before any sweep: nearly every flush of a queue without dependencies or
# callbacks ends here (each probe is the predicate of a small partial index).
_ANYTHING = sa.text(
    """
    SELECT EXISTS (SELECT 1 FROM sluice_jobs WHERE status = 'pending' AND after_ids IS NOT NULL)
        OR EXISTS (SELECT 1 FROM sluice_jobs WHERE callback_url IS NOT NULL AND callback_sent_at IS NULL
                   AND status IN ('completed', 'failed'))
    """
)


def anything_to_settle(conn: sa.Connection) -> bool:
    return bool(conn.execute(_ANYTHING).scalar())
