"""reclaim → claim a batch → run handlers → record outcomes, within maxJobs and a time budget."""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
import sqlalchemy as sa

from .attempts import AttemptLog
from .config import Settings
from .context import JobContext
from .errors import PermanentError, RetryLater, ValidationError
from .logs import event_line, log_event, log_lines, logger
from .models import DrainSource, DrainSummary, StopReason
from .registry import JobType, Registry
from .store import attempts as attempt_store
from .store import claim as store
from .store import jobs as job_store
from .store.claim import Claimed, Outcome

MAX_ERROR_CHARS = 2000
UNKNOWN_HINT = "no handler is registered for these types here: list their modules in JOBS_HANDLER_MODULES"

# Before a job runs: None runs it, a number of seconds defers it uncounted (lib/ratelimit.py).
Gate = Callable[[Claimed, JobType], float | None]
# (write, read) of a handler's marker kept on the job across attempts, per claim token.
Checkpoints = tuple[Callable[[uuid.UUID, uuid.UUID, Any], bool], Callable[[uuid.UUID, uuid.UUID], Any]]


def job_fields(job: Claimed) -> dict[str, object]:
    return {
        "jobId": str(job.id),
        "type": job.type,
        "tenantId": job.tenant_id,
        "correlationId": job.correlation_id,
        "attempt": job.attempt,
    }


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # PostgreSQL text can't hold U+0000 or lone surrogates; one odd message mustn't sink the batch.
    text = text[:MAX_ERROR_CHARS].replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def validation_text(exc: pydantic.ValidationError) -> str:
    """Locations and messages only: pydantic's own text quotes the input, i.e. the payload."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    )
    return error_text(ValidationError(f"{exc.title} is not valid: {problems}"))


@dataclass
class Budget:
    """Stops claiming or starting once time spent plus the longest attempt seen would pass it."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    longest: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def allows_another(self) -> bool:
        return self.elapsed() + self.longest <= self.seconds

    def saw(self, duration: float) -> None:
        self.longest = max(self.longest, duration)


@dataclass
class Executor:
    """Runs one claimed job's handler and turns whatever happens into an Outcome."""

    registry: Registry
    token: uuid.UUID
    report_progress: Callable[[uuid.UUID, uuid.UUID, int, str | None], None]
    gate: Gate | None = None
    checkpoints: Checkpoints | None = None
    # Records the outcome of a job that finished after its drain had to answer (budget overrun).
    record_late: Callable[[Outcome], None] | None = None
    settings: Settings | None = None

    def __post_init__(self) -> None:
        # Decided once per batch: with INFO off, a job pays for no log fields at all.
        self.logging = logger.isEnabledFor(logging.INFO)
        # Finish/fail lines, written in one call per batch (a logging call per job cost more
        # than the job itself: ~20 µs each).
        self.lines: list[str] = []
        # Start/finish times and tracebacks of this batch's attempts (sluice_attempts).
        self.attempt_log = AttemptLog()
        # Types claimed here that this deployment has no handler for (the CLI warns about them).
        self.unknown_types: set[str] = set()

    def run(self, job: Claimed) -> Outcome:
        self.attempt_log.start(job.id)
        if not self.logging:
            outcome = self._attempt(job, time.monotonic())
            self.attempt_log.finish(job.id)
            return outcome
        started = time.monotonic()
        outcome = self._attempt(job, started)
        self.attempt_log.finish(job.id)
        ms = round((time.monotonic() - started) * 1000, 3)
        if outcome.status == "completed":
            self.lines.append(event_line("job.finish", **job_fields(job), durationMs=ms))
        else:
            extra = {"error": outcome.error, "next": outcome.status}
            self.lines.append(event_line("job.fail", **job_fields(job), durationMs=ms, **extra))
        return outcome

    def log_starts(self, batch: Sequence[Claimed]) -> None:
        """One job.start line per job, written before the batch runs (a crash keeps them)."""
        if self.logging:
            log_lines([event_line("job.start", **job_fields(job)) for job in batch])

    def flush_logs(self) -> None:
        log_lines(self.lines)
        self.lines = []

    def _attempt(self, job: Claimed, started: float) -> Outcome:
        job_type = self.registry.find(job.type)
        if job_type is None:
            self.unknown_types.add(job.type)
            return Outcome(job.id, "failed", error=f"unknown job type {job.type!r}")
        wait = self.gate(job, job_type) if self.gate is not None else None
        if wait is not None:
            error = f"rate limit reached; next try in {wait:.0f} s"
            return Outcome(job.id, "pending", error=error, delay=wait, refund=1)
        ctx = self._context(job, started) if job_type.wants_context else None
        try:
            value = job_type.run(job.payload, ctx, self.settings)
            if value is not None and inspect.isawaitable(value):
                import asyncio

                value = asyncio.run(_await(value))
        except PermanentError as exc:
            self.attempt_log.caught(job.id, exc)
            return Outcome(job.id, "failed", error=error_text(exc))
        except RetryLater as exc:
            return Outcome(job.id, "pending", error=error_text(exc), delay=exc.delay_seconds, refund=1)
        except pydantic.ValidationError as exc:
            # The stored payload no longer fits the type's model: retrying can't help.
            return Outcome(job.id, "failed", error=validation_text(exc))
        except Exception as exc:
            self.attempt_log.caught(job.id, exc)
            return self.retry_or_fail(job, error_text(exc))
        try:
            return Outcome(job.id, "completed", result=store.result_json(value))
        except (TypeError, ValueError) as exc:
            return Outcome(
                job.id, "failed", error=f"result is not JSON-serialisable: {exc}"[:MAX_ERROR_CHARS]
            )

    @staticmethod
    def retry_or_fail(job: Claimed, error: str) -> Outcome:
        if job.attempt >= job.max_attempts:
            return Outcome(job.id, "failed", error=error)
        return Outcome(job.id, "pending", error=error, delay=job.backoff.delay(job.attempt))

    def _context(self, job: Claimed, started: float) -> JobContext:
        token, report = self.token, self.report_progress
        return JobContext(
            str(job.id),
            job.type,
            job.attempt,
            job.max_attempts,
            job.tenant_id,
            job.correlation_id,
            started + job.timeout_seconds,
            lambda job_id, percent, step: report(token, job_id, percent, step),
            job.id,
            self._checkpointer(),
            self.settings,
        )

    def _checkpointer(self) -> tuple[Callable[[uuid.UUID, Any], bool], Callable[[uuid.UUID], Any]] | None:
        if self.checkpoints is None:
            return None
        token, (write, read) = self.token, self.checkpoints
        return (lambda job_id, value: write(token, job_id, value), lambda job_id: read(token, job_id))


async def _await(value: object) -> object:
    return await value  # type: ignore[misc]


class _Runner(threading.Thread):
    """Runs a batch's handlers in order off the main thread, so the main thread can stop waiting
    for a handler (Python can't kill it) that outlives its timeout or the drain's budget."""

    def __init__(self, jobs: Sequence[Claimed], executor: Executor, budget: Budget) -> None:
        super().__init__(name="sluice-runner", daemon=True)
        self.jobs, self.executor, self.budget = jobs, executor, budget
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.current: Claimed | None = None
        self.current_started = 0.0
        self.abandoned = False  # timed out: the drain recorded its failure, drop the late result
        self.orphaned = False  # budget ran out mid-job: it keeps its lease and records itself
        # Wakes watch() early: when the runner ends, or a job starts whose deadline comes before
        # the one watch() is waiting for (only then: waking per job costs 5% of a fast drain).
        self.moved_on = threading.Event()
        self.watching_until = 0.0

    def run(self) -> None:
        try:
            self._run_jobs()
        finally:
            self.moved_on.set()

    def _run_jobs(self) -> None:
        for job in self.jobs:
            with self.lock:
                if self.abandoned or self.orphaned or not self.budget.allows_another():
                    return
                self.current, self.current_started = job, time.monotonic()
                if self.current_started + job.timeout_seconds < self.watching_until:
                    self.moved_on.set()
            outcome = self.executor.run(job)
            with self.lock:
                if self.abandoned:
                    return
                if not self.orphaned:
                    self.budget.saw(time.monotonic() - self.current_started)
                    self.outcomes.append(outcome)
                    self.current = None
                    continue
            if self.executor.record_late is not None:
                self.executor.record_late(outcome)
            self.executor.flush_logs()
            return

    def watch(self) -> tuple[Literal["timeout", "overrun"], Claimed] | None:
        """Wait for the runner. Give up on its current job when the job's timeout passes
        ("timeout") or the drain's budget ends first ("overrun")."""
        budget_end = self.budget.started + self.budget.seconds
        while self.is_alive():
            with self.lock:
                job, started = self.current, self.current_started
                self.moved_on.clear()
                timeout_at = started + job.timeout_seconds if job else 0.0
                self.watching_until = min(timeout_at, budget_end) if job else time.monotonic() + 0.02
            if job is None:
                self.moved_on.wait(0.02)
                continue
            wait = self.watching_until - time.monotonic()
            if wait > 0:
                # Not join(wait): the next job may start meanwhile with a shorter timeout.
                self.moved_on.wait(wait)
                continue
            with self.lock:
                if self.current is not job or not self.is_alive():
                    continue
                if time.monotonic() >= timeout_at:
                    self.abandoned = True
                    self.budget.saw(float(job.timeout_seconds))
                    return "timeout", job
                self.orphaned = True
                return "overrun", job
        return None


def run_batch(
    batch: Sequence[Claimed], executor: Executor, budget: Budget
) -> tuple[list[Outcome], list[Claimed]]:
    """Run a claimed batch; returns (outcomes, jobs never started because the budget ran out).
    A job still running when the budget ends is in neither: it keeps its lease."""
    outcomes: list[Outcome] = []
    todo = list(batch)
    while todo:
        runner = _Runner(todo, executor, budget)
        runner.start()
        stop = runner.watch()
        with runner.lock:
            done = list(runner.outcomes)
        outcomes.extend(done)
        if stop is None:
            return outcomes, todo[len(done) :]
        kind, job = stop
        rest = todo[len(done) + 1 :]
        if kind == "overrun":
            log_event("job.overrun", jobId=str(job.id), type=job.type)
            return outcomes, rest
        log_event("job.timeout", jobId=str(job.id), type=job.type, timeoutSeconds=job.timeout_seconds)
        outcomes.append(executor.retry_or_fail(job, f"timed out after {job.timeout_seconds}s"))
        todo = rest
    return outcomes, []


def _warn_unknown(types: Sequence[str]) -> None:
    """Jobs nobody here can run are retried, not lost, but must not go unnoticed (a WARNING)."""
    if types:
        logger.warning(event_line("drain.unknown_types", types=list(types), hint=UNKNOWN_HINT))


@dataclass
class Drainer:
    engine: sa.Engine
    registry: Registry
    grace_seconds: int
    batch_size: int
    # Called in the recording transaction with the ids that just became `failed` (alerts).
    on_failed: Callable[[sa.Connection, list[uuid.UUID]], None] | None = None
    # Called before claiming (schedules enqueue their due slots here).
    before_claim: Callable[[sa.Connection], None] | None = None
    # Makes each claimed batch's rate-limit gate (lib/ratelimit.py), given the claim token.
    make_gate: Callable[[uuid.UUID], Gate] | None = None
    # The queue's settings, handed to every handler as ctx.settings.
    settings: Settings | None = None

    def run(self, max_jobs: int, budget_ms: int, source: DrainSource = "api") -> DrainSummary:
        budget = Budget(budget_ms / 1000)
        processed = succeeded = retried = failed = 0
        stopped: StopReason = "empty"
        unknown_types: set[str] = set()
        with self.engine.connect() as conn:
            with conn.begin():
                if self.before_claim is not None:
                    self.before_claim(conn)
                attempt_store.record_expired_leases(conn)
                reclaimed = store.reclaim_expired(conn)
                retried += reclaimed.retried
                failed += len(reclaimed.failed_ids)
                self._failed(conn, reclaimed.failed_ids)
            while True:
                if processed >= max_jobs:
                    stopped = "maxJobs"
                    break
                if not budget.allows_another():
                    stopped = "budget"
                    break
                token = uuid.uuid4()
                with conn.begin():
                    batch = store.claim_batch(
                        conn, min(self.batch_size, max_jobs - processed), token, self.grace_seconds
                    )
                if not batch:
                    break
                gate = self.make_gate(token) if self.make_gate is not None else None
                checkpoints = (self._set_checkpoint, self._get_checkpoint)
                executor = Executor(
                    self.registry,
                    token,
                    self._progress,
                    gate,
                    checkpoints,
                    self._late_recorder(token),
                    self.settings,
                )
                executor.log_starts(batch)
                outcomes, unstarted = run_batch(batch, executor, budget)
                with conn.begin():
                    recorded = store.record_outcomes(conn, token, outcomes)
                    store.release(conn, token, [job.id for job in unstarted])
                    # Attempt history: written with the outcomes it describes.
                    attempt_store.record_attempts(
                        conn, executor.attempt_log.records(batch, outcomes, unstarted)
                    )
                    self._failed(conn, recorded.failed_ids)
                executor.flush_logs()
                unknown_types |= executor.unknown_types
                processed += len(outcomes)
                succeeded += recorded.succeeded
                retried += recorded.retried
                failed += len(recorded.failed_ids)
                if unstarted:
                    stopped = "budget"
                    break
            with conn.begin():
                remaining = job_store.count_ready(conn)
                summary = DrainSummary(
                    processed=processed,
                    succeeded=succeeded,
                    retried=retried,
                    failed=failed,
                    duration_ms=round(budget.elapsed() * 1000),
                    remaining=remaining,
                    stopped_by=stopped,
                    unknown_types=tuple(sorted(unknown_types)),
                )
                job_store.record_drain(conn, summary, source)
        log_event("drain.finish", source=source, **summary.model_dump(by_alias=True))
        _warn_unknown(summary.unknown_types)
        return summary

    def _failed(self, conn: sa.Connection, ids: list[uuid.UUID]) -> None:
        if ids and self.on_failed is not None:
            self.on_failed(conn, ids)

    def _progress(self, token: uuid.UUID, job_id: uuid.UUID, percent: int, step: str | None) -> None:
        # Its own short transaction: the drain's connection belongs to the main thread.
        with self.engine.begin() as conn:
            job_store.set_progress_step(conn, token, job_id, percent, step)

    def _late_recorder(self, token: uuid.UUID) -> Callable[[Outcome], None]:
        def record(outcome: Outcome) -> None:
            # Fenced like any write: if the lease was taken over meanwhile, this changes nothing.
            # On a thread nobody waits for: a failure here is logged and left to the lease.
            try:
                with self.engine.begin() as conn:
                    self._failed(conn, store.record_outcomes(conn, token, [outcome]).failed_ids)
            except sa.exc.SQLAlchemyError as exc:
                log_event("job.late_record_failed", jobId=str(outcome.id), error=error_text(exc))

        return record

    def _set_checkpoint(self, token: uuid.UUID, job_id: uuid.UUID, value: Any) -> bool:
        with self.engine.begin() as conn:
            return store.set_checkpoint(conn, token, job_id, value)

    def _get_checkpoint(self, token: uuid.UUID, job_id: uuid.UUID) -> Any:
        with self.engine.connect() as conn:
            return store.get_checkpoint(conn, token, job_id)
