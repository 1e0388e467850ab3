"""PostgreSQL LISTEN/NOTIFY: how an enqueue wakes ``drain --loop`` workers at once.

The enqueue's own statement sends the notification (see ``jobs._INSERT_PG``), so it is delivered
when, and only if, the jobs commit. Workers listen on a dedicated autocommit connection.
"""

from __future__ import annotations

from typing import Any

# One channel per database (channels are database-scoped); the payload stays empty: a wake-up,
# never data (the drain reads the table).
CHANNEL = "sluice_jobs_ready"


def listen(conn: Any) -> None:
    """Start listening on a psycopg connection in autocommit mode."""
    conn.execute(f"LISTEN {CHANNEL}")


def wait(conn: Any, timeout: float) -> bool:
    """True as soon as a notification arrives (within ``timeout`` s); the others already queued
    are consumed with it (a burst wakes a worker once)."""
    if not list(conn.notifies(timeout=timeout, stop_after=1)):
        return False
    for _ in conn.notifies(timeout=0.0):
        pass
    return True
