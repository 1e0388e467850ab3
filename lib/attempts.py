"""Attempt history as a drain sees it: when each attempt ran and how it ended (the handler's
traceback travels on its Outcome: its own frames only, never payload values)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .models import Job
from .store.attempts import AttemptRecord
from .store.claim import Claimed, Outcome


def attempt_records(outcomes: Sequence[Outcome]) -> list[AttemptRecord]:
    """One record per outcome that did not complete its job. A completing attempt writes no row:
    the job row itself holds it (see ``completed_attempt``), which keeps history off the hot path.
    Outcome times are this process's monotonic clock, turned into UTC here."""
    wall, mono = datetime.now(UTC), time.monotonic()

    def utc(moment: float | None) -> datetime | None:
        return None if moment is None else wall - timedelta(seconds=mono - moment)

    return [
        AttemptRecord(o.id, o.attempt, utc(o.started), utc(o.finished) or wall, o.kind, o.error, o.traceback)
        for o in outcomes
        if o.status != "completed"
    ]


def released_records(jobs: Sequence[Claimed]) -> list[AttemptRecord]:
    """A ``released`` record per claimed job given back without being started."""
    released = datetime.now(UTC)
    return [AttemptRecord(job.id, job.attempt, None, released, "released") for job in jobs]


def completed_attempt(job: Job) -> AttemptRecord | None:
    """A completed job's last attempt, read from the job row (its start to its finish)."""
    if job.status != "completed" or job.finished_at is None:
        return None
    return AttemptRecord(uuid.UUID(job.id), job.attempts, job.started_at, job.finished_at, "completed")
