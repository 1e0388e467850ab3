"""The commands behind ``python -m lib``; each returns an exit code (errors raise, see main)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pydantic

from ..config import get_settings
from ..errors import Unavailable, ValidationError, invalid
from ..models import BulkRequest, DrainSummary, JobSpec, StopReason
from ..queue import Queue
from ..retention import CleanupRequest
from ..worker import Waker
from .common import configure_logs, migrate_database, safe_url
from .output import EXIT_OK, EXIT_USAGE, Progress, emit, error, info
from .serve import run as run_server


@contextmanager
def open_queue() -> Iterator[Queue]:
    queue = Queue.from_settings()
    try:
        yield queue
    finally:
        queue.engine.dispose()


# -- migrate ---------------------------------------------------------------------------------------


def migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logs(args, settings)
    revision = migrate_database(settings)
    info(f"{safe_url(settings.database_url)} is at revision {revision}")
    return EXIT_OK


# -- serve -----------------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    return run_server(args)


# -- drain -----------------------------------------------------------------------------------------


def drain(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logs(args, settings, long_running=args.loop)
    budget = args.budget_ms if args.budget_ms is not None else settings.jobs_drain_budget_ms
    with open_queue() as queue:
        if args.loop:
            return drain_loop(queue, args.max_jobs, budget, args.interval)
        show = args.max_jobs > settings.jobs_batch_size
        progress = Progress(args.max_jobs) if show else None
        try:
            summary = drain_in_chunks(queue, args.max_jobs, budget, progress)
        finally:
            if progress is not None:
                progress.finish()
    warn_unknown_types(summary)
    emit(summary.model_dump(by_alias=True))
    return EXIT_OK


def warn_unknown_types(summary: DrainSummary) -> None:
    """Jobs this process has no handler for are retried later, never silently: say so."""
    if summary.unknown_types:
        names = ", ".join(repr(name) for name in summary.unknown_types)
        info(
            f"warning: no handler for job type {names} here: the jobs are retried with backoff. "
            "Set JOBS_HANDLER_MODULES to the module(s) that register it (e.g. JOBS_HANDLER_MODULES=app.jobs)"
        )


def drain_in_chunks(
    queue: Queue, max_jobs: int, budget_ms: int, progress: Progress | None = None
) -> DrainSummary:
    """One drain, run as drains of at most a claim batch each so progress can be shown between them.

    Each chunk is a real drain (recorded in sluice_drains with source "cli"); the summary adds
    them up and follows the API's stoppedBy rule.
    """
    chunk = queue.settings.jobs_batch_size
    started = time.monotonic()
    parts: list[DrainSummary] = []
    processed = 0
    stopped: StopReason
    while True:
        left_ms = budget_ms - round((time.monotonic() - started) * 1000)
        if parts and left_ms <= 0:
            stopped = "budget"
            break
        part = queue.drain(min(chunk, max_jobs - processed), max(left_ms, 1), source="cli")
        parts.append(part)
        processed += part.processed
        if progress is not None:
            progress.total = min(max_jobs, processed + part.remaining)
            progress.update(processed, sum(p.failed for p in parts))
        if part.stopped_by != "maxJobs":
            stopped = part.stopped_by
            break
        if processed >= max_jobs:
            stopped = "maxJobs"
            break
        if part.remaining == 0:
            # Nothing ready is left: another chunk would only find the queue empty.
            stopped = "empty"
            break
    return DrainSummary(
        processed=processed,
        succeeded=sum(p.succeeded for p in parts),
        retried=sum(p.retried for p in parts),
        failed=sum(p.failed for p in parts),
        duration_ms=round((time.monotonic() - started) * 1000),
        remaining=parts[-1].remaining,
        stopped_by=stopped,
        unknown_types=tuple(sorted({name for p in parts for name in p.unknown_types})),
    )


def drain_loop(queue: Queue, max_jobs: int, budget_ms: int, interval: float) -> int:
    """A long-running worker: drain, print what each drain did, idle while the queue is empty.

    SIGINT/SIGTERM finish the drain under way and exit 0; a second signal gives up at once.
    A database outage is waited out, not fatal: a supervisor restarting us would not help.
    """
    stop = threading.Event()
    # A floor keeps --interval 0 from spinning on an empty table.
    waker = Waker(queue.engine, max(interval, 0.05), stop, info)
    with stop_on_signals(stop):
        info("draining until SIGINT/SIGTERM")
        waker.start()
        try:
            while not stop.is_set():
                try:
                    summary = drain_in_chunks(queue, max_jobs, budget_ms)
                except Unavailable as exc:
                    info(f"{exc.message}; retrying in {max(interval, 1.0):g} s")
                    stop.wait(max(interval, 1.0))
                    continue
                if summary.processed or summary.retried or summary.failed:
                    warn_unknown_types(summary)
                    emit(summary.model_dump(by_alias=True), compact=True)
                if summary.stopped_by == "empty":
                    waker.wait()
        finally:
            waker.close()
    info("stopped")
    return EXIT_OK


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        info(f"{signal.Signals(signum).name}: stopping after the current drain (again to force)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- status and enqueue -----------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    configure_logs(args, get_settings())
    with open_queue() as queue:
        overview = queue.status(tenant=args.tenant)
    emit(overview.model_dump(mode="json", by_alias=True))
    return EXIT_OK


def read_json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from an argument, or from stdin when the argument is ``-``."""
    if text == "-":
        text = sys.stdin.read()

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except ValueError as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}", [{"loc": what, "msg": str(exc)}]) from None
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object", [{"loc": what, "msg": "not an object"}])
    return value


def enqueue(args: argparse.Namespace) -> int:
    configure_logs(args, get_settings())
    body: dict[str, Any] = {"type": args.type, "payload": read_json_object(args.payload, "payload")}
    options = {
        "delaySeconds": args.delay,
        "runAt": args.run_at,
        "priority": args.priority,
        "idempotencyKey": args.idempotency_key,
        "tenantId": args.tenant,
    }
    body.update({key: value for key, value in options.items() if value is not None})
    try:
        spec = JobSpec.model_validate(body)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the job is not valid") from None
    with open_queue() as queue:
        result = queue.submit(spec)
    if not result.created:
        info("a job with this idempotency key exists already; nothing new was enqueued")
    emit(result.job.to_wire())
    return EXIT_OK


# -- reading and fixing jobs ------------------------------------------------------------------------


def get(args: argparse.Namespace) -> int:
    configure_logs(args, get_settings())
    with open_queue() as queue:
        job = queue.get(args.id).to_wire()
        if args.attempts:
            job["attempts"] = [item.to_wire() for item in queue.attempts(args.id)]
            job["steps"] = [step.model_dump(mode="json", by_alias=True) for step in queue.steps(args.id)]
    emit(job)
    return EXIT_OK


def list_jobs(args: argparse.Namespace) -> int:
    configure_logs(args, get_settings())
    if args.limit > 500:
        raise ValidationError("--limit must be between 1 and 500", [{"loc": "limit", "msg": "at most 500"}])
    with open_queue() as queue:
        page = queue.list(
            status=args.status, type=args.type, tenant=args.tenant, limit=args.limit, cursor=args.cursor
        )
    emit(page.model_dump(mode="json", by_alias=True))
    return EXIT_OK


def bulk(args: argparse.Namespace) -> int:
    """``retry ID`` / ``cancel ID``: that job, printed; with filters, several ids or --dry-run:
    ``{"matched", "changed"}`` as POST /api/jobs/retry|cancel answers."""
    configure_logs(args, get_settings())
    filters = {
        "status": args.status,
        "type": args.type,
        "tenantId": args.tenant,
        "createdBefore": args.created_before,
        "limit": args.limit,
    }
    given = {key: value for key, value in filters.items() if value is not None}
    single = len(args.ids) == 1 and not given and not args.dry_run
    with open_queue() as queue:
        if single:
            action = queue.retry if args.verb == "retry" else queue.cancel
            emit(action(args.ids[0]).to_wire())
            return EXIT_OK
        body: dict[str, Any] = {**given, "dryRun": args.dry_run}
        if args.ids:
            body["ids"] = args.ids
        try:
            request = BulkRequest.model_validate(body, by_alias=True)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'filters'}: "
                + err["msg"].removeprefix("Value error, ")
                for err in exc.errors(include_url=False, include_input=False, include_context=False)
            )
            raise ValidationError(f"the {args.verb} filters are not valid: {problems}") from None
        result = queue.bulk_retry(request) if args.verb == "retry" else queue.bulk_cancel(request)
    if args.dry_run:
        done = "retried" if args.verb == "retry" else "cancelled"
        info(f"dry run: {result.matched} job(s) would be {done}; nothing changed")
    emit(result.model_dump(by_alias=True))
    return EXIT_OK


# -- retention and schedules ----------------------------------------------------------------------


def cleanup(args: argparse.Namespace) -> int:
    configure_logs(args, get_settings())
    body = {
        "completedOlderThanSeconds": args.completed_older_than,
        "failedOlderThanSeconds": args.failed_older_than,
        "cancelledOlderThanSeconds": args.cancelled_older_than,
        "dryRun": args.dry_run,
    }
    try:
        request = CleanupRequest.model_validate({k: v for k, v in body.items() if v is not None})
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the cleanup options are not valid") from None
    with open_queue() as queue:
        result = queue.retention.cleanup(
            completed_older_than=request.completed_older_than_seconds,
            failed_older_than=request.failed_older_than_seconds,
            cancelled_older_than=request.cancelled_older_than_seconds,
            dry_run=request.dry_run,
        )
    emit(result.to_wire())
    return EXIT_OK


def schedules(args: argparse.Namespace) -> int:
    configure_logs(args, get_settings())
    if args.action != "list" and not args.name:
        error(f"`schedules {args.action}` needs a NAME")
        return EXIT_USAGE
    if args.action == "put" and args.body is None:
        error("`schedules put NAME` needs --body JSON (a schedule as PUT /api/schedules/NAME takes it)")
        return EXIT_USAGE
    with open_queue() as queue:
        if args.action == "list":
            emit({"schedules": [item.to_wire() for item in queue.schedules.list_schedules()]})
        elif args.action == "get":
            emit(queue.schedules.get_schedule(args.name).to_wire())
        elif args.action == "put":
            emit(queue.schedules.put_schedule(args.name, read_json_object(args.body, "body")).to_wire())
        else:
            queue.schedules.delete_schedule(args.name)
            info(f"deleted schedule {args.name!r}")
    return EXIT_OK


def erase(args: argparse.Namespace) -> int:
    """Erase a tenant: its jobs (not processing ones), schedules and archived rows. Any id the
    database may hold is accepted here, older ones the API's alphabet refuses included."""
    configure_logs(args, get_settings())
    with open_queue() as queue:
        result = queue.retention.erase_tenant(args.tenant)
    emit(result.to_wire())
    if result.processing:
        info(f"{result.processing} job(s) were processing and were kept: erase again once they end")
    return EXIT_OK


# -- encryption at rest -----------------------------------------------------------------------------


def rotate_keys(args: argparse.Namespace) -> int:
    """After putting a new key first in JOBS_ENCRYPTION_KEYS: re-encrypt what is stored with it,
    so the old key can then be dropped. Prints {"jobs": n, "schedules": n} (rows rewritten)."""
    configure_logs(args, get_settings())
    with open_queue() as queue:
        if not any(job_type.sensitive for job_type in queue.registry):
            info("no registered job type has sensitive fields: is JOBS_HANDLER_MODULES set?")
        result = queue.rotation.rotate_keys(batch_size=args.batch_size)
    emit(result.to_wire())
    return EXIT_OK
