"""PostgreSQL LISTEN/NOTIFY: how an enqueue wakes ``drain --loop`` workers at once.

The enqueue's own statement sends the notification (see ``jobs._INSERT_PG``), so it is delivered
when, and only if, the jobs commit. Workers listen on a dedicated autocommit connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# One channel per database (channels are database-scoped); the payload stays empty: a wake-up,
# never data (the drain reads the table).
CHANNEL = "sluice_jobs_ready"


def listen(conn: Any) -> None:
    """Start listening on a psycopg connection in autocommit mode."""
    conn.execute(f"LISTEN {CHANNEL}")


def wait(conn: Any, timeout: float) -> bool:
    """True when at least one notification arrived within ``timeout`` s; every one already
    queued is consumed with it (a burst wakes a worker once)."""
    woken = False
    for _ in _notifies(conn, timeout):
        woken = True
        timeout = 0.0
    return woken


def _notifies(conn: Any, timeout: float) -> Iterator[Any]:
    # stop_after=None with a timeout: returns what arrived within it (psycopg >= 3.2).
    yield from conn.notifies(timeout=timeout)
