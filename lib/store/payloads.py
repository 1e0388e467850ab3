"""Payload rewrites for key rotation (lib/crypto.py): read a batch of payloads of some types in
key order, write back the re-encrypted ones. Nothing else ever rewrites a stored payload."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa

from ..schema import jobs, schedules

Kind = Literal["jobs", "schedules"]


def _table(kind: Kind) -> tuple[sa.Table, sa.Column[Any]]:
    """The table and its primary key (jobs by id, schedules by name)."""
    return (jobs, jobs.c.id) if kind == "jobs" else (schedules, schedules.c.name)


def payloads_of_types(
    conn: sa.Connection, kind: Kind, types: Sequence[str], after: Any, limit: int
) -> list[tuple[Any, Any]]:
    """Up to ``limit`` (key, payload) pairs of rows of ``types`` with key > ``after``, by key."""
    table, key = _table(kind)
    stmt = sa.select(key, table.c.payload).where(table.c.type.in_(list(types))).order_by(key).limit(limit)
    if after is not None:
        stmt = stmt.where(key > after)
    return [(row[0], row[1]) for row in conn.execute(stmt)]


def write_payloads(conn: sa.Connection, kind: Kind, rows: Sequence[tuple[Any, dict[str, Any]]]) -> None:
    """Set each row's payload (one executemany)."""
    if not rows:
        return
    table, key = _table(kind)
    stmt = (
        sa.update(table)
        .where(key == sa.bindparam("b_key", type_=key.type))
        .values(payload=sa.bindparam("b_payload", type_=table.c.payload.type))
    )
    conn.execute(stmt, [{"b_key": k, "b_payload": payload} for k, payload in rows])
