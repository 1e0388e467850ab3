"""What a handler gets besides its payload."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from .config import Settings, get_settings
from .errors import Sleeping
from .logs import log_event
from .steps import StepBook, check_name

T = TypeVar("T")


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
    _report: Callable[[UUID, int, str | None], None]
    _uuid: UUID
    # (write, read) of a marker kept on the job across attempts; None outside a drain.
    _checkpoints: tuple[Callable[[UUID, Any], bool], Callable[[UUID], Any]] | None = None
    _settings: Settings | None = None
    # This attempt's durable steps; None outside a drain (a step then just runs).
    _steps: StepBook | None = None

    @property
    def settings(self) -> Settings:
        """The settings of the queue running this job (the process's, outside a drain)."""
        return self._settings or get_settings()

    def time_left(self) -> float:
        """Seconds until this attempt times out."""
        return max(0.0, self.deadline - time.monotonic())

    def progress(self, percent: int | float, step: str | None = None) -> None:
        """Store progress (0–100), and the step text when given, on the job now, so status
        readers see them while it runs."""
        value = int(min(100, max(0, percent)))
        self._report(self._uuid, value, step)
        if step is not None:
            log_event("job.progress", jobId=self.job_id, type=self.type, progress=value, step=step)

    def checkpoint(self, value: Any) -> bool:
        """Store a JSON value on the job now (as its ``result``), fenced on this attempt's lease,
        so that a later attempt can tell a side effect already happened. False: not stored."""
        return self._checkpoints[0](self._uuid, value) if self._checkpoints else False

    def saved_checkpoint(self) -> Any:
        """What an earlier attempt of this job stored with ``checkpoint()`` (None if nothing)."""
        return self._checkpoints[1](self._uuid) if self._checkpoints else None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def step(self, name: str, fn: Callable[[], T]) -> T | Any:
        """Run ``fn()`` once for this job and return its result; on every later attempt or
        continuation, return the stored result without running it. The result (JSON) is stored
        on the job before this returns. ``name`` is unique per job; see README "Durable steps"."""
        if self._steps is None:
            check_name(name)
            return fn()
        return self._steps.run(name, fn)

    def sleep(self, seconds: float, name: str | None = None) -> None:
        """End this attempt now, uncounted, and run the job again from the top after ``seconds``
        (its finished steps return their results). On that run this call returns at once.
        Unnamed sleeps are matched by their order in the handler."""
        if self._steps is None:
            raise Sleeping(seconds)
        self._steps.sleep(seconds, name)
