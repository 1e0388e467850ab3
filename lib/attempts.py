"""Attempt history as a drain sees it: when each attempt ran, how it ended, and the handler's
traceback (its own frames only, no local variables: never payload values)."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from .models import Job
from .store.attempts import MAX_TRACEBACK_CHARS, AttemptOutcome, AttemptRecord
from .store.claim import Claimed, Outcome

# Sluice's own frames above the handler's: left out of a traceback, they'd only repeat themselves.
_OWN_FILES = frozenset(str(Path(__file__).resolve().parent / name) for name in ("drain.py", "registry.py"))


def handler_frames(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()) in _OWN_FILES:
        tb = tb.tb_next
    return tb


def handler_traceback(exc: BaseException) -> str:
    """The exception as Python prints it, from the handler's first frame down, at most
    MAX_TRACEBACK_CHARS (the end kept: it says where it broke), storable as PostgreSQL text."""
    lines = traceback.format_exception(type(exc), exc, handler_frames(exc.__traceback__))
    text = "".join(lines)
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "…" + text[-(MAX_TRACEBACK_CHARS - 1) :]
    text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def outcome_name(outcome: Outcome) -> AttemptOutcome:
    if outcome.status == "pending":
        # A refunded attempt (rate limit, RetryLater) was put off, not spent.
        return "deferred" if outcome.refund else "retried"
    return outcome.status


@dataclass
class AttemptLog:
    """What one claimed batch's attempts did besides their outcome: times and tracebacks."""

    # Unix times (a float per job is all the hot path pays; datetimes are made for rows only).
    started: dict[uuid.UUID, float] = field(default_factory=dict)
    finished: dict[uuid.UUID, float] = field(default_factory=dict)
    tracebacks: dict[uuid.UUID, str] = field(default_factory=dict)

    def start(self, job_id: uuid.UUID) -> None:
        self.started[job_id] = time.time()

    def finish(self, job_id: uuid.UUID) -> None:
        self.finished[job_id] = time.time()

    def caught(self, job_id: uuid.UUID, exc: BaseException) -> None:
        self.tracebacks[job_id] = handler_traceback(exc)

    def records(
        self, batch: Sequence[Claimed], outcomes: Sequence[Outcome], unstarted: Sequence[Claimed]
    ) -> list[AttemptRecord]:
        """One record per outcome that did not complete the job, and a ``released`` one per job
        given back unstarted. A completing attempt writes no row: the job row itself holds it
        (see ``completed_attempt``), which keeps the history off the drain's hot path."""
        attempt_of = {job.id: job.attempt for job in batch}
        now = time.time()
        rows = [
            AttemptRecord(
                job_id=o.id,
                attempt=attempt_of.get(o.id, 0),
                started_at=_utc(self.started.get(o.id)),
                finished_at=_utc(self.finished.get(o.id, now)) or datetime.now(UTC),
                outcome=outcome_name(o),
                error=o.error,
                traceback=self.tracebacks.get(o.id),
            )
            for o in outcomes
            if o.status != "completed"
        ]
        released = datetime.now(UTC)
        rows += [AttemptRecord(job.id, job.attempt, None, released, "released") for job in unstarted]
        return rows


def _utc(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def completed_attempt(job: Job) -> AttemptRecord | None:
    """A completed job's last attempt, read from the job row (its claim time to its finish)."""
    if job.status != "completed" or job.finished_at is None:
        return None
    return AttemptRecord(
        uuid.UUID(job.id), job.attempts, job.started_at, job.finished_at, "completed"
    )
