"""Aggregates over the drain history for the metrics endpoint (job counts come from queue_status)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ..schema import drains
from .clock import now_plus
from .jobs import idle_drains

OUTCOMES = ("succeeded", "retried", "failed")


@dataclass(frozen=True, slots=True)
class DrainStats:
    # Every drain recorded, by (source, stopped_by).
    drains: dict[tuple[str, str], int]
    # Jobs by outcome, summed over every drain recorded.
    outcomes: dict[str, int]
    # Drains of the recent window: how many, their total duration, and for each bucket's upper
    # bound (seconds) how many took at most that long.
    recent_count: int
    recent_seconds: float
    recent_buckets: tuple[tuple[float, int], ...]
    # When the last drain that found nothing ran (cron is alive even when there is no work).
    last_idle_at: datetime | None = None


def drain_stats(conn: sa.Connection, window_seconds: int, bounds: Sequence[float]) -> DrainStats:
    grouped = sa.select(
        drains.c.source,
        drains.c.stopped_by,
        sa.func.count(),
        *(sa.func.coalesce(sa.func.sum(drains.c[name]), 0) for name in OUTCOMES),
    ).group_by(drains.c.source, drains.c.stopped_by)
    by_kind: dict[tuple[str, str], int] = {}
    outcomes = dict.fromkeys(OUTCOMES, 0)
    for source, stopped_by, n, *sums in conn.execute(grouped):
        by_kind[(source, stopped_by)] = int(n)
        for name, value in zip(OUTCOMES, sums, strict=True):
            outcomes[name] += int(value)

    in_bucket = [sa.func.sum(sa.case((drains.c.duration_ms <= bound * 1000, 1), else_=0)) for bound in bounds]
    recent = sa.select(
        sa.func.count(), sa.func.coalesce(sa.func.sum(drains.c.duration_ms), 0), *in_bucket
    ).where(drains.c.at >= now_plus(conn.dialect.name, -float(window_seconds)))
    count, total_ms, *cumulative = conn.execute(recent).one()
    # Drains that found nothing are counted, not recorded: they count as stopped_by "empty".
    last_idle = None
    for source, (n, at) in idle_drains(conn).items():
        by_kind[(source, "empty")] = by_kind.get((source, "empty"), 0) + n
        last_idle = at if last_idle is None else max(last_idle, at)
    return DrainStats(
        drains=by_kind,
        outcomes=outcomes,
        recent_count=int(count),
        recent_seconds=int(total_ms) / 1000,
        recent_buckets=tuple(
            (float(bound), int(n or 0)) for bound, n in zip(bounds, cumulative, strict=True)
        ),
        last_idle_at=last_idle,
    )
