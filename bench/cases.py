"""What a benchmark case is: a function (dsn, n) -> Timing run on its own fresh database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    enqueue_s: float | None  # None when the case measures no enqueue (e.g. a latency-only case)
    drain_s: float | None
    done: int  # jobs found completed in the database afterwards
    note: str = ""


@dataclass(frozen=True)
class Case:
    name: str  # row label in the table; also used in the database name
    run: Callable[[str, int], Timing]
    # Probed before the run; returns an error string to print a "not available" row instead.
    available: Callable[[], str | None] = lambda: None
    check_done: bool = True  # compare Timing.done with N


class NotAvailable(Exception):
    """Raised by a case that cannot run here (missing library, missing API)."""
