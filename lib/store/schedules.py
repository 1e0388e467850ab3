"""Schedule rows: save, read, find the due ones and advance them (fenced on the old next run)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..schema import UTCDateTime, schedules
from .clock import now

# What a save may write; last_run_at and last_job_id belong to the drain alone.
SAVED_COLUMNS = (
    "cron",
    "timezone",
    "type",
    "payload",
    "options",
    "enabled",
    "catch_up",
    "tenant_id",
    "next_run_at",
)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    name: str
    cron: str
    timezone: str
    type: str
    payload: dict[str, Any]
    options: dict[str, Any]
    enabled: bool
    catch_up: bool
    tenant_id: str | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: uuid.UUID | None
    updated_at: datetime


def _row(row: Any) -> ScheduleRow:
    return ScheduleRow(**dict(row._mapping))


def _at(value: datetime) -> sa.BindParameter[datetime]:
    return sa.bindparam(None, value, type_=UTCDateTime())


def db_now(conn: sa.Connection) -> datetime:
    """The database clock, as an aware UTC datetime."""
    value: datetime = conn.execute(sa.select(now(conn.dialect.name))).scalar_one()
    return value


def save(conn: sa.Connection, name: str, values: dict[str, Any]) -> ScheduleRow:
    """Create or replace a schedule; a replace keeps last_run_at and last_job_id."""
    dialect = conn.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    fields = {key: values[key] for key in SAVED_COLUMNS}
    stmt = insert(schedules).values(name=name, updated_at=now(dialect), **fields)
    stmt = stmt.on_conflict_do_update(
        index_elements=[schedules.c.name],
        set_={**{key: stmt.excluded[key] for key in SAVED_COLUMNS}, "updated_at": now(dialect)},
    )
    return _row(conn.execute(stmt.returning(*schedules.c)).one())


def get(conn: sa.Connection, name: str, *, lock: bool = False) -> ScheduleRow | None:
    stmt = sa.select(*schedules.c).where(schedules.c.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return _row(row) if row else None


def list_all(conn: sa.Connection) -> list[ScheduleRow]:
    return [_row(row) for row in conn.execute(sa.select(*schedules.c).order_by(schedules.c.name))]


def delete(conn: sa.Connection, name: str) -> bool:
    return bool(conn.execute(sa.delete(schedules).where(schedules.c.name == name)).rowcount)


def delete_for_tenant(conn: sa.Connection, tenant: str) -> int:
    return int(conn.execute(sa.delete(schedules).where(schedules.c.tenant_id == tenant)).rowcount)


def due(conn: sa.Connection, at: datetime | None, limit: int) -> list[ScheduleRow]:
    """Enabled schedules whose next run is at or before ``at`` (None: the database clock); rows
    another drain is enqueuing right now are skipped (SKIP LOCKED; SQLite serialises drains)."""
    clock = _at(at) if at is not None else now(conn.dialect.name)
    stmt = (
        sa.select(*schedules.c)
        .where(schedules.c.enabled.is_(True), schedules.c.next_run_at <= clock)
        .order_by(schedules.c.next_run_at, schedules.c.name)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_row(row) for row in conn.execute(stmt)]


def advance(
    conn: sa.Connection,
    name: str,
    *,
    old_next: datetime,
    new_next: datetime | None,
    last_run_at: datetime | None,
    last_job_id: uuid.UUID | None,
) -> bool:
    """Move a schedule past the slots just enqueued, only if no other drain did it first."""
    values: dict[str, Any] = {"next_run_at": new_next, "updated_at": now(conn.dialect.name)}
    if last_run_at is not None:
        values.update(last_run_at=last_run_at, last_job_id=last_job_id)
    stmt = (
        sa.update(schedules)
        .where(schedules.c.name == name, schedules.c.next_run_at == _at(old_next))
        .values(**values)
    )
    return bool(conn.execute(stmt).rowcount)
