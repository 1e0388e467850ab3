"""Sluice cases. `CASES[0]` is the reference row the ×Sluice ratios divide by.

The Sluice-only cases with targets (HTTP, latency, RSS, import time, ...) are in bench/sluice_only.py;
they reuse the helpers below.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from bench.cases import Case, Timing
from bench.peers import BATCH
from bench.pgutil import analyze, scalar

if TYPE_CHECKING:
    from lib import Queue

SLUICE_NAME = "sluice"

# Jobs Sluice shows as completed (table of lib/schema.py). If that table is renamed, the count
# falls back to the one public table with status+payload columns, see `_count_completed`.
SLUICE_DONE_SQL = "SELECT count(*) FROM sluice_jobs WHERE status = 'completed'"


def sluice_available() -> str | None:
    """None when `lib` exposes the API the bench uses, else the reason it does not."""
    try:
        import lib
    except Exception as exc:  # any import-time failure of a half-written lib counts
        return f"{type(exc).__name__}: {exc}"
    missing = [a for a in ("Queue", "JobSpec") if not hasattr(lib, a)]
    if missing:
        return f"lib has no {', '.join(missing)}"
    if not hasattr(lib.Queue, "from_url"):
        return "lib.Queue has no from_url"
    return None


def _count_completed(dsn: str) -> tuple[int | None, str]:
    """Completed jobs per SLUICE_DONE_SQL, else in the one public table with status+payload."""
    import psycopg

    try:
        return scalar(dsn, SLUICE_DONE_SQL), ""
    except psycopg.errors.UndefinedTable:
        pass

    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name IN ('status', 'payload')"
                " GROUP BY table_name HAVING count(*) = 2"
            ).fetchall()
        ]
    if len(tables) != 1:
        return None, f"job table not identified ({tables}); verified by summary only"
    return scalar(dsn, f"SELECT count(*) FROM \"{tables[0]}\" WHERE status = 'completed'"), ""


def enqueue_noops(q: Queue, n: int, batch: int = BATCH) -> float:
    """Enqueue n no-op jobs with enqueue_many in batches; seconds taken (specs built in the timing)."""
    import lib

    t0 = perf_counter()
    for start in range(0, n, batch):
        q.enqueue_many([lib.JobSpec(type="noop", payload={}) for _ in range(min(batch, n - start))])
    return perf_counter() - t0


def drain_all(q: Queue, n: int) -> tuple[float, int]:
    """Drain up to n jobs in-process; (seconds, jobs processed)."""
    t0 = perf_counter()
    processed = 0
    while processed < n:  # one call should do; loop in case a drain stops on its budget
        summary = q.drain(max_jobs=n - processed, budget_ms=600_000)
        if summary.processed == 0:
            break
        processed += summary.processed
    return perf_counter() - t0, processed


def close_queue(q: Queue) -> None:
    """Close the queue's pooled connections (before its database is dropped)."""
    q.engine.dispose()


def bench_sluice(dsn: str, n: int) -> Timing:
    import lib

    q = lib.Queue.from_url(dsn)
    try:
        q.migrate()
        enqueue_s = enqueue_noops(q, n)
        analyze(dsn)  # untimed, see pgutil.analyze
        drain_s, processed = drain_all(q, n)
    finally:
        close_queue(q)
    done, note = _count_completed(dsn)
    return Timing(enqueue_s, drain_s, processed if done is None else done, note)


CASES: list[Case] = [
    Case(SLUICE_NAME, bench_sluice, available=sluice_available),
]
