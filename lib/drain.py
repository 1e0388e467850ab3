"""The execution lifecycle: reclaim → claim a batch → start each job under a lease that covers it →
record outcomes as jobs finish → give back what never started, within maxJobs and a time budget.

Threads: a *runner* runs a batch's handlers one after another; the drain's own thread supervises
it on the drain's one connection: it gives up on a handler at its timeout (watchdog), writes
finished outcomes in small time-boxed flushes (completer) and keeps the batch's leases renewed
(keeper). A process killed at any instruction replays at most the job in flight and the jobs of
the last unflushed window; every other job is recorded, or was never started and comes back when
its (short) lease runs out.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pydantic
import sqlalchemy as sa

from .attempts import attempt_records, released_records
from .config import Settings
from .context import JobContext
from .db import reader
from .errors import LeaseLost, PermanentError, RetryLater, Sleeping, ValidationError
from .logs import event_line, log_event, log_lines, logger
from .models import DrainSource, DrainSummary, StopReason
from .registry import JobType, Registry
from .steps import StepBook, StepRead, StepWrite
from .store import attempts as attempt_store
from .store import claim as store
from .store import jobs as job_store
from .store.attempts import MAX_TRACEBACK_CHARS
from .store.claim import HOLD_SECONDS, Claimed, Outcome, Recorded

MAX_ERROR_CHARS = 2000
# The completer writes finished outcomes at least this often, or as soon as this many wait.
FLUSH_SECONDS = 0.25
FLUSH_JOBS = 1000
# Handler threads given up on (timed out, still running: Python can't kill a thread) that one
# process keeps at most; at the limit a drain stops starting jobs until some of them end.
MAX_ABANDONED_THREADS = 16

T = TypeVar("T")
UNKNOWN_HINT = "no handler is registered for these types here: list their modules in JOBS_HANDLER_MODULES"

# Before a job runs: None runs it, a number of seconds defers it uncounted (lib/ratelimit.py).
Gate = Callable[[Claimed, JobType], float | None]
# (write, read) of a handler's marker kept on the job across attempts, per claim token.
Checkpoints = tuple[Callable[[uuid.UUID, uuid.UUID, Any], bool], Callable[[uuid.UUID, uuid.UUID], Any]]
# (write, read) of durable steps, per claim token (lib/steps.py).
StepStore = tuple[StepWrite, StepRead]
# Called in each flush's transaction (and the late write of an overrun job) with the claim token,
# the outcomes (fenced: those whose lease was taken over changed nothing) and what they changed:
# per-attempt history goes here. Outcome.started/finished are time.monotonic() instants; the
# database time of one is now() less (time.monotonic() at the flush - instant).
FlushHook = Callable[[sa.Connection, uuid.UUID, Sequence[Outcome], Recorded], None]


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
    return storable_text(text, MAX_ERROR_CHARS)


def storable_text(text: str, limit: int) -> str:
    # PostgreSQL text can't hold U+0000 or lone surrogates; one odd message mustn't sink the batch.
    text = text[:limit].replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


# Frames of the drain and the registry that lead into every handler: not the handler's story.
_OWN_FILES = frozenset({__file__, inspect.getfile(Registry)})


def traceback_text(exc: BaseException) -> str:
    """The handler's frames (file, line, code), never local values; the end kept when too long."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return storable_text(text[-MAX_TRACEBACK_CHARS:], MAX_TRACEBACK_CHARS)


def validation_text(exc: pydantic.ValidationError) -> str:
    """Locations and messages only: pydantic's own text quotes the input, i.e. the payload."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    )
    return error_text(ValidationError(f"{exc.title} is not valid: {problems}"))


def unknown_type_text(name: str) -> str:
    return (
        f"job type {name!r} is not registered in this deployment (add the module that defines it "
        "to JOBS_HANDLER_MODULES); retried with its backoff"
    )


# Monotonic seconds. A drain's budget is spent on one (tests pass a fake one to spend it exactly).
Clock = Callable[[], float]


@dataclass
class Budget:
    """Stops claiming or starting once time spent plus the longest attempt seen would pass it."""

    seconds: float
    clock: Clock = time.monotonic
    started: float = field(init=False)
    longest: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def allows_another(self) -> bool:
        return self.elapsed() + self.longest <= self.seconds

    def saw(self, duration: float) -> None:
        self.longest = max(self.longest, duration)

    @property
    def end(self) -> float:
        """The time.monotonic() instant the budget runs out (what the drain's waits are timed on)."""
        return time.monotonic() + self.seconds - self.elapsed()


class AbandonedThreads:
    """Counts this process's handler threads that timed out and still run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def ended(self) -> None:
        with self.lock:
            self.count -= 1
        log_event("job.abandoned_thread_ended", abandonedThreads=self.count)

    def full(self) -> bool:
        return self.count >= self.limit


abandoned_threads = AbandonedThreads(MAX_ABANDONED_THREADS)


@dataclass
class Leases:
    """When this batch's leases were last set (claim or renewal), as seen from this process: the
    instant *before* the statement, so the database's leases are at least that long."""

    grace: int
    renewed_at: float

    def cover(self, job: Claimed, at: float) -> bool:
        """Does the job's lease already run to ``at`` + timeout + half the grace, or more?"""
        return job.timeout_seconds <= HOLD_SECONDS and at - self.renewed_at <= self.grace / 2

    def interval(self, batch: Sequence[Claimed]) -> float:
        """How often to renew: often enough that a job starting between two renewals is still
        covered (half the grace) and that no held job's lease can run out in between."""
        shortest = min(min(job.timeout_seconds, HOLD_SECONDS) for job in batch) + self.grace
        return max(0.05, min(shortest / 3, self.grace / 2 if self.grace else shortest / 3, 10.0))


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
    # The start write of a job whose lease does not cover it yet; False: the job is not ours.
    start: Callable[[Claimed], bool] | None = None
    steps: StepStore | None = None

    def __post_init__(self) -> None:
        # Decided once per batch: with INFO off, a job pays for no log fields at all.
        self.logging = logger.isEnabledFor(logging.INFO)
        # Types claimed here that this deployment has no handler for (the CLI warns about them).
        self.unknown_types: set[str] = set()

    def line(self, job: Claimed, outcome: Outcome) -> str:
        """The job's finish/fail line (written with its flush: a logging call per job cost more
        than the job itself, ~20 µs each)."""
        ms = round(((outcome.finished or 0.0) - (outcome.started or 0.0)) * 1000, 3)
        if outcome.status == "completed":
            return event_line("job.finish", **job_fields(job), durationMs=ms)
        extra = {"error": outcome.error, "next": outcome.status}
        return event_line("job.fail", **job_fields(job), durationMs=ms, **extra)

    def log_starts(self, batch: Sequence[Claimed]) -> None:
        """One job.start line per job, written before the batch runs (a crash keeps them)."""
        if self.logging:
            log_lines([event_line("job.start", **job_fields(job)) for job in batch])

    def run(self, job: Claimed, started: float) -> Outcome | None:
        """The attempt's outcome; None when a step found the job taken over (nothing to record)."""
        try:
            status, result, error, delay, refund, trace = self._attempt(job, started)
        except LeaseLost:
            return None
        return Outcome(
            job.id, status, result, error, delay, refund, job.attempt, started, time.monotonic(), trace
        )

    def _attempt(
        self, job: Claimed, started: float
    ) -> tuple[Literal["completed", "pending", "failed"], str | None, str | None, float, int, str | None]:
        job_type = self.registry.find(job.type)
        if job_type is None:
            self.unknown_types.add(job.type)
            # During a rolling deploy the next deployment may know it: not failed at first sight.
            return self._retry_or_fail(job, unknown_type_text(job.type), None)
        wait = self.gate(job, job_type) if self.gate is not None else None
        if wait is not None:
            return "pending", None, f"rate limit reached; next try in {wait:.0f} s", wait, 1, None
        ctx = self._context(job, started) if job_type.wants_context else None
        try:
            value = job_type.run(job.payload, ctx, self.settings)
            if value is not None and inspect.isawaitable(value):
                import asyncio  # lazy: most handlers are plain functions, asyncio costs cold start

                value = asyncio.run(_await(value))
        except PermanentError as exc:
            return "failed", None, error_text(exc), 0.0, 0, traceback_text(exc)
        except RetryLater as exc:
            return "pending", None, error_text(exc), exc.delay_seconds, 1, None
        except Sleeping as exc:
            # A continuation, not a retry: uncounted, its steps kept.
            return "pending", None, exc.message, exc.delay_seconds, 1, None
        except LeaseLost:
            raise
        except pydantic.ValidationError as exc:
            # The stored payload no longer fits the type's model: retrying can't help.
            return "failed", None, validation_text(exc), 0.0, 0, None
        except BaseException as exc:
            # SystemExit, a cancelled asyncio task, KeyboardInterrupt raised by handler code:
            # on this thread they can only come from the handler, so they are a failed attempt
            # (a real Ctrl-C goes to the main thread). Left alone they would end the runner and
            # release the job uncounted, due at once, forever.
            return self._retry_or_fail(job, error_text(exc), traceback_text(exc))
        try:
            return "completed", store.result_json(value), None, 0.0, 0, None
        except (TypeError, ValueError) as exc:
            error = f"result is not JSON-serialisable: {exc}"[:MAX_ERROR_CHARS]
            return "failed", None, error, 0.0, 0, None

    @staticmethod
    def _retry_or_fail(
        job: Claimed, error: str, trace: str | None
    ) -> tuple[Literal["pending", "failed"], None, str, float, int, str | None]:
        if job.attempt >= job.max_attempts:
            return "failed", None, error, 0.0, 0, trace
        return "pending", None, error, job.backoff.delay(job.attempt), 0, trace

    @staticmethod
    def timed_out(job: Claimed, started: float) -> Outcome:
        error = f"timed out after {job.timeout_seconds}s"
        status, _, _, delay, _, _ = Executor._retry_or_fail(job, error, None)
        return Outcome(job.id, status, None, error, delay, 0, job.attempt, started, time.monotonic())

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
            self._step_book(job),
        )

    def _step_book(self, job: Claimed) -> StepBook | None:
        if self.steps is None:
            return None
        return StepBook(self.token, job.id, *self.steps)

    def _checkpointer(self) -> tuple[Callable[[uuid.UUID, Any], bool], Callable[[uuid.UUID], Any]] | None:
        if self.checkpoints is None:
            return None
        token, (write, read) = self.token, self.checkpoints
        return (lambda job_id, value: write(token, job_id, value), lambda job_id: read(token, job_id))


async def _await(value: object) -> object:
    return await value  # type: ignore[misc]


class _Runner(threading.Thread):
    """Runs a batch's handlers in order off the drain's thread, so the drain can stop waiting for
    a handler (Python can't kill it) that outlives its timeout or the drain's budget. Finished
    outcomes wait in ``done`` until the drain's thread takes them (``take``)."""

    def __init__(self, jobs: Sequence[Claimed], executor: Executor, budget: Budget, leases: Leases) -> None:
        super().__init__(name="sluice-runner", daemon=True)
        self.jobs, self.executor, self.budget, self.leases = jobs, executor, budget, leases
        self.lock = threading.Lock()
        self.done: list[Outcome] = []
        self.lines: list[str] = []
        self.first_done_at = 0.0  # when the oldest outcome in ``done`` finished
        self.taken = 0  # jobs taken from ``jobs``: started, or found no longer ours
        self.current: Claimed | None = None
        self.current_started = 0.0
        self.finished = False  # the runner has left its loop
        self.halted = False  # the drain's thread wants no more jobs started
        self.abandoned = False  # timed out: the drain recorded its failure, drop the late result
        self.orphaned = False  # budget ran out mid-job: it keeps its lease and records itself
        # Wakes the drain's thread early: when the runner ends, when outcomes fill a flush, or
        # when a job starts whose deadline comes before the one it waits for (only then: waking
        # per job costs 5% of a fast drain).
        self.wake = threading.Event()
        self.watching_until = 0.0

    def run(self) -> None:
        try:
            self._run_jobs()
        finally:
            with self.lock:
                self.finished = True
            self.wake.set()
            if self.abandoned:
                abandoned_threads.ended()

    def _run_jobs(self) -> None:
        executor, lock, leases = self.executor, self.lock, self.leases
        for job in self.jobs:
            with lock:
                if self.halted or self.orphaned or not self.budget.allows_another():
                    return
                started = time.monotonic()
                self.current, self.current_started = job, started
                if started + job.timeout_seconds < self.watching_until:
                    self.wake.set()
                covered = executor.start is None or leases.cover(job, started)
                if covered:
                    self.taken += 1
            if not covered:
                verdict = self._start(job)
                if verdict == "skip":
                    continue
                if verdict == "stop":
                    return
            outcome = executor.run(job, started)
            if outcome is None:
                if self._lost(job):
                    continue
                return
            if not self._keep(outcome, executor.line(job, outcome) if executor.logging else None):
                return

    def _keep(self, outcome: Outcome, line: str | None) -> bool:
        """Hand a finished outcome to the drain's thread; False: stop, the drain has moved on."""
        with self.lock:
            if self.abandoned:
                return False
            if not self.orphaned:
                finished = outcome.finished or 0.0
                self.budget.saw(finished - self.current_started)
                self.done.append(outcome)
                if line is not None:
                    self.lines.append(line)
                if len(self.done) == 1:
                    # No wake-up for this: the drain's thread looks at least every FLUSH_SECONDS.
                    self.first_done_at = finished
                elif len(self.done) >= FLUSH_JOBS:
                    self.wake.set()
                self.current = None
                return True
        if self.executor.record_late is not None:
            self.executor.record_late(outcome)
        log_lines([line] if line else [])
        return False

    def _lost(self, job: Claimed) -> bool:
        """A step write found the job taken over: record nothing, go on (False: stop, the drain
        has moved on)."""
        log_event("job.lease_lost", jobId=str(job.id), type=job.type)
        with self.lock:
            if self.abandoned or self.orphaned:
                return False
            self.current = None
            return True

    def _start(self, job: Claimed) -> Literal["run", "skip", "stop"]:
        """The start write of a job its lease does not cover yet: "skip" when the job is no longer
        ours, "stop" when that can't be known (the job is left for the drain to give back)."""
        assert self.executor.start is not None
        try:
            ours = self.executor.start(job)
        except sa.exc.SQLAlchemyError as exc:
            log_event("job.start_write_failed", jobId=str(job.id), error=error_text(exc))
            with self.lock:
                self.current, self.halted = None, True
            return "stop"
        with self.lock:
            self.taken += 1
            if ours:
                return "run"
            self.current = None
        # Its lease ran out and another drain took it: not ours to run or record.
        log_event("job.lost_before_start", jobId=str(job.id), type=job.type)
        return "skip"

    def take(self) -> tuple[list[Outcome], list[str]]:
        with self.lock:
            done, lines = self.done, self.lines
            self.done, self.lines = [], []
        return done, lines

    def unstarted(self) -> list[Claimed]:
        with self.lock:
            return list(self.jobs[self.taken :])


class Link:
    """The drain's one connection. A write that fails may be retried once on a fresh connection
    (a pooler or a failover may have dropped the old one)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.conn = engine.connect()

    def write(self, fn: Callable[[sa.Connection], T], *, retry: bool = False) -> T:
        """``fn`` in a transaction of its own."""
        try:
            with self.conn.begin():
                return fn(self.conn)
        except sa.exc.DBAPIError as exc:
            if not retry:
                raise
            log_event("drain.write_retried", error=type(exc.orig).__name__)
            self.refresh()
            with self.conn.begin():
                return fn(self.conn)

    def refresh(self) -> None:
        try:
            self.conn.invalidate()
            self.conn.close()
        except sa.exc.SQLAlchemyError:
            pass  # it is being thrown away
        self.conn = self.engine.connect()

    def close(self) -> None:
        self.conn.close()


@contextmanager
def linked(engine: sa.Engine) -> Iterator[Link]:
    link = Link(engine)
    try:
        yield link
    finally:
        link.close()


@dataclass
class Tally:
    processed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    unknown_types: set[str] = field(default_factory=set)


class _Batch:
    """Supervises one claimed batch on the drain's thread: watchdog, completer and lease keeper."""

    def __init__(
        self,
        drainer: Drainer,
        link: Link,
        token: uuid.UUID,
        *,
        jobs: Sequence[Claimed],
        leases: Leases,
        budget: Budget,
        tally: Tally,
        executor: Executor,
    ) -> None:
        self.drainer, self.link, self.token, self.jobs = drainer, link, token, jobs
        self.leases, self.budget, self.tally, self.executor = leases, budget, tally, executor
        self.interval = leases.interval(jobs)
        self.next_renewal = leases.renewed_at + self.interval
        self.unwritten: list[Outcome] = []
        self.held_threads = 0  # abandoned handler threads in this process, at the last timeout

    def run(self) -> list[Claimed]:
        """Run the batch; returns the jobs never started (to give back). A job still running when
        the budget ends is neither recorded nor returned: it keeps its lease."""
        todo = list(self.jobs)
        while todo:
            runner = _Runner(todo, self.executor, self.budget, self.leases)
            runner.start()
            try:
                stop = self._supervise(runner)
            except BaseException:
                self._salvage(runner)
                raise
            if stop is None:
                return runner.unstarted()
            kind, job, started = stop
            rest = runner.unstarted()
            outcomes, lines = runner.take()
            if kind == "overrun":
                log_event("job.overrun", jobId=str(job.id), type=job.type)
                self._flush(outcomes, lines)
                return rest
            log_event(
                "job.timeout",
                jobId=str(job.id),
                type=job.type,
                timeoutSeconds=job.timeout_seconds,
                abandonedThreads=self.held_threads,
            )
            self._flush([*outcomes, Executor.timed_out(job, started)], lines)
            todo = rest
            if todo and abandoned_threads.full():
                log_event("drain.abandoned_threads_full", abandonedThreads=abandoned_threads.count)
                return todo
        return []

    def _supervise(self, runner: _Runner) -> tuple[Literal["timeout", "overrun"], Claimed, float] | None:
        """Wait for the runner; flush outcomes and renew leases when due. Give up on its current
        job when the job's timeout passes ("timeout") or the drain's budget ends ("overrun")."""
        budget_end = self.budget.end
        while True:
            now = time.monotonic()
            with runner.lock:
                job, started, finished = runner.current, runner.current_started, runner.finished
                pending, first_at = len(runner.done), runner.first_done_at
                runner.wake.clear()
                limit = min(started + job.timeout_seconds, budget_end) if job else now + 0.02
                runner.watching_until = limit
            if pending and (finished or pending >= FLUSH_JOBS or now - first_at >= FLUSH_SECONDS):
                self._flush(*runner.take())
                continue
            if finished:
                return None
            if now >= self.next_renewal:
                self._renew(job)
                continue
            if job is not None and now >= limit:
                with runner.lock:
                    if runner.current is not job or runner.finished:
                        continue
                    if now >= started + job.timeout_seconds:
                        # Counted before the runner can see the flag and count its own end.
                        self.held_threads = abandoned_threads.add()
                        runner.abandoned = True
                        self.budget.saw(float(job.timeout_seconds))
                        return "timeout", job, started
                    runner.orphaned = True
                    return "overrun", job, started
            # Outcomes that start to wait don't wake this thread: it looks every FLUSH_SECONDS.
            wake_at = min(limit, self.next_renewal, (first_at if pending else now) + FLUSH_SECONDS)
            runner.wake.wait(max(0.0, wake_at - time.monotonic()))

    def _flush(self, outcomes: list[Outcome], lines: list[str]) -> None:
        """Record finished outcomes (retried once on a fresh connection), then their side effects.
        Outcomes stay in ``unwritten`` until written, for a salvage after an interruption."""
        self.unwritten.extend(outcomes)
        outcomes = self.unwritten
        if outcomes:
            token, drainer = self.token, self.drainer
            recorded = self.link.write(lambda conn: drainer.record(conn, token, outcomes), retry=True)
            self.unwritten = []
            tally = self.tally
            tally.processed += len(outcomes)
            tally.succeeded += recorded.succeeded
            tally.retried += recorded.retried
            tally.failed += len(recorded.failed_ids)
            drainer.alert(self.link, recorded.failed_ids)
            if recorded.succeeded or recorded.failed_ids:
                drainer.settle(self.link)
        log_lines(lines)

    def _renew(self, running: Claimed | None) -> None:
        at = time.monotonic()
        token, grace = self.token, self.leases.grace
        ids = [job.id for job in self.jobs]
        running_id = running.id if running is not None else None
        self.link.write(
            lambda conn: store.renew_leases(conn, token, ids, running=running_id, grace=grace), retry=True
        )
        self.leases.renewed_at = at
        self.next_renewal = at + self.interval

    def _salvage(self, runner: _Runner) -> None:
        """The drain's thread is leaving abruptly: start nothing more and, unless the database is
        what failed, record what finished and give back what never started."""
        with runner.lock:
            runner.halted = True
        error = sys.exc_info()[1]
        if isinstance(error, sa.exc.SQLAlchemyError):
            return
        try:
            self._flush(*runner.take())
            unstarted = runner.unstarted()
            self.link.write(lambda conn: Drainer.release(conn, self.token, unstarted))
        except Exception as exc:  # the original error is the one to raise
            log_event("drain.salvage_failed", error=error_text(exc))


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
    # Called after outcomes commit, in a transaction of its own, with the ids that just became
    # `failed` (dead-letter alerts): its failure is logged and never undoes an outcome.
    on_failed: Callable[[sa.Connection, list[uuid.UUID]], None] | None = None
    # Called before claiming (schedules enqueue their due slots here).
    before_claim: Callable[[sa.Connection], None] | None = None
    # Makes each claimed batch's rate-limit gate (lib/ratelimit.py), given the claim token.
    make_gate: Callable[[uuid.UUID], Gate] | None = None
    # The queue's settings, handed to every handler as ctx.settings.
    settings: Settings | None = None
    # Called in every outcome flush's transaction (per-attempt history).
    on_flush: FlushHook | None = None
    # What the drain's time budget is measured on.
    clock: Clock = time.monotonic
    # Called after outcomes that ended jobs commit, and at every drain's start, in a transaction
    # of its own: dependants released or cancelled, callbacks enqueued (lib/flow.py).
    on_settle: Callable[[sa.Connection], None] | None = None

    def run(self, max_jobs: int, budget_ms: int, source: DrainSource = "api") -> DrainSummary:
        budget = Budget(budget_ms / 1000, self.clock)
        tally = Tally()
        stopped: StopReason = "empty"
        with linked(self.engine) as link:
            reclaimed = link.write(self._reclaim)
            tally.retried += reclaimed.retried
            tally.failed += len(reclaimed.failed_ids)
            self.alert(link, reclaimed.failed_ids)
            self.settle(link)
            while True:
                if tally.processed >= max_jobs:
                    stopped = "maxJobs"
                    break
                if not budget.allows_another():
                    stopped = "budget"
                    break
                if abandoned_threads.full():
                    log_event("drain.abandoned_threads_full", abandonedThreads=abandoned_threads.count)
                    stopped = "budget"
                    break
                token = uuid.uuid4()
                limit, grace = min(self.batch_size, max_jobs - tally.processed), self.grace_seconds
                leases = Leases(grace, time.monotonic())
                batch = link.write(lambda conn: store.claim_batch(conn, limit, token, grace))  # noqa: B023
                if not batch:
                    break
                executor = self._executor(token)
                executor.log_starts(batch)
                unstarted = _Batch(
                    self,
                    link,
                    token,
                    jobs=batch,
                    leases=leases,
                    budget=budget,
                    tally=tally,
                    executor=executor,
                ).run()
                tally.unknown_types |= executor.unknown_types
                if unstarted:
                    link.write(lambda conn: self.release(conn, token, unstarted), retry=True)  # noqa: B023
                    stopped = "budget"
                    break
            summary = link.write(lambda conn: self._finish(conn, tally, budget, stopped, source))
        log_event("drain.finish", source=source, **summary.model_dump(by_alias=True))
        _warn_unknown(summary.unknown_types)
        return summary

    def _reclaim(self, conn: sa.Connection) -> store.Reclaimed:
        if self.before_claim is not None:
            self.before_claim(conn)
        attempt_store.record_expired_leases(conn)
        return store.reclaim_expired(conn)

    @staticmethod
    def _finish(
        conn: sa.Connection, tally: Tally, budget: Budget, stopped: StopReason, source: DrainSource
    ) -> DrainSummary:
        summary = DrainSummary(
            processed=tally.processed,
            succeeded=tally.succeeded,
            retried=tally.retried,
            failed=tally.failed,
            duration_ms=round(budget.elapsed() * 1000),
            remaining=job_store.count_ready(conn),
            stopped_by=stopped,
            unknown_types=tuple(sorted(tally.unknown_types)),
        )
        job_store.record_drain(conn, summary, source)
        return summary

    def _executor(self, token: uuid.UUID) -> Executor:
        return Executor(
            self.registry,
            token,
            self._progress,
            self.make_gate(token) if self.make_gate is not None else None,
            (self._set_checkpoint, self._get_checkpoint),
            self._late_recorder(token),
            self.settings,
            lambda job: self._start(token, job),
            steps=(self._write_step, self._read_steps),
        )

    def record(self, conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome]) -> Recorded:
        """One flush's write (the caller's transaction): fenced outcomes, then the flush hook."""
        recorded = store.record_outcomes(conn, token, outcomes)
        # Attempt history, written with the outcomes it describes.
        attempt_store.record_attempts(conn, attempt_records(outcomes))
        if self.on_flush is not None:
            self.on_flush(conn, token, outcomes, recorded)
        return recorded

    @staticmethod
    def release(conn: sa.Connection, token: uuid.UUID, jobs: Sequence[Claimed]) -> None:
        store.release(conn, token, [job.id for job in jobs])
        attempt_store.record_attempts(conn, released_records(jobs))

    def alert(self, link: Link, ids: list[uuid.UUID]) -> None:
        """Dead-letter side effects, after the outcomes committed and apart from them."""
        hook = self.on_failed
        if not ids or hook is None:
            return
        try:
            link.write(lambda conn: hook(conn, ids))
        except Exception as exc:  # an alert problem must never cost an outcome
            log_event("alert.digest_failed", failed=len(ids), error=error_text(exc))

    def settle(self, link: Link) -> None:
        """Side effects of ended jobs, after their outcomes committed; a failure here is logged
        and retried by the next sweep (every drain starts with one)."""
        hook = self.on_settle
        if hook is None:
            return
        try:
            link.write(hook)
        except Exception as exc:  # never costs an outcome
            log_event("flow.settle_failed", error=error_text(exc))

    def _start(self, token: uuid.UUID, job: Claimed) -> bool:
        # Its own short transaction: the drain's connection belongs to the drain's thread.
        with self.engine.begin() as conn:
            return store.start_job(conn, token, job.id, self.grace_seconds)

    def _progress(self, token: uuid.UUID, job_id: uuid.UUID, percent: int, step: str | None) -> None:
        with self.engine.begin() as conn:
            job_store.set_progress_step(conn, token, job_id, percent, step)

    def _late_recorder(self, token: uuid.UUID) -> Callable[[Outcome], None]:
        def record(outcome: Outcome) -> None:
            # Fenced like any write: if the lease was taken over meanwhile, this changes nothing.
            # On a thread nobody waits for: a failure here is logged and left to the lease.
            try:
                with linked(self.engine) as link:
                    recorded = link.write(lambda conn: self.record(conn, token, [outcome]), retry=True)
                    self.alert(link, recorded.failed_ids)
                    self.settle(link)
            except sa.exc.SQLAlchemyError as exc:
                log_event("job.late_record_failed", jobId=str(outcome.id), error=error_text(exc))

        return record

    def _set_checkpoint(self, token: uuid.UUID, job_id: uuid.UUID, value: Any) -> bool:
        with self.engine.begin() as conn:
            return store.set_checkpoint(conn, token, job_id, value)

    def _get_checkpoint(self, token: uuid.UUID, job_id: uuid.UUID) -> Any:
        with reader(self.engine).connect() as conn:
            return store.get_checkpoint(conn, token, job_id)

    def _write_step(self, token: uuid.UUID, job_id: uuid.UUID, name: str, entry: str) -> bool:
        with self.engine.begin() as conn:
            return store.write_step(conn, token, job_id, name, entry)

    def _read_steps(self, token: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        with reader(self.engine).connect() as conn:
            return store.read_steps(conn, token, job_id)
