"""What a handler gets besides its payload."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class JobContext:
    job_id: str
    type: str
    attempt: int
    max_attempts: int
    tenant_id: str | None
    correlation_id: str
    # Monotonic instant at which this attempt's timeout (its lease, less grace) runs out.
    deadline: float
    _report: Callable[[UUID, int], None]
    _uuid: UUID

    def time_left(self) -> float:
        """Seconds until this attempt times out."""
        return max(0.0, self.deadline - time.monotonic())

    def progress(self, percent: int | float, step: str | None = None) -> None:
        """Store progress (0–100) on the job now, so status readers see it while it runs."""
        value = int(min(100, max(0, percent)))
        self._report(self._uuid, value)
        if step is not None:
            from .logs import log_event

            log_event("job.progress", jobId=self.job_id, type=self.type, progress=value, step=step)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts
