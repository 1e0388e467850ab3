"""Flow control around the queue: dependencies (``after``) and completion callbacks.

Concurrency keys and fair share live in the claim (lib/store/claim.py), debounce in the insert
(lib/store/jobs.py). What is here runs after outcomes commit, never inside them: a sweep (after
each flush that ended jobs, and at every drain's start) releases the jobs whose dependencies all
completed, cancels those one of whose dependencies failed or was cancelled, and turns each finished
job's ``callbackUrl`` into a ``sluice.callback`` job. A drain killed between an outcome and its
sweep loses nothing: the next sweep finds the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from .core import Core
from .errors import SluiceError, ValidationError
from .logs import log_event
from .models import Job, JobSpec
from .store import flow as store
from .store.jobs import NewJob, get_job, insert_jobs

CALLBACK_TYPE = "sluice.callback"


def check_after(conn: sa.Connection, new: Sequence[NewJob]) -> None:
    """422 when an ``after`` names a job that does not exist or belongs to another tenant."""
    wanted = [job for job in new if job.after_ids is not None]
    if not wanted:
        return
    found = store.statuses(conn, [uuid.UUID(i) for job in wanted for i in job.after_ids or ()])
    for job in wanted:
        for index, text in enumerate(job.after_ids or ()):
            seen = found.get(uuid.UUID(text))
            if seen is None or seen[0] != job.tenant_id:
                loc = f"after.{index}" if len(new) == 1 else f"jobs.{new.index(job)}.after.{index}"
                raise ValidationError(f"after names no job {text}", [{"loc": loc, "msg": "no such job"}])


def resolve_new(conn: sa.Connection, made: list[tuple[Job, bool]]) -> list[tuple[Job, bool]]:
    """Jobs just inserted with ``after`` start held: release or cancel them at once if their
    dependencies already decided it, and answer with what they became."""
    ids = [uuid.UUID(job.id) for job, created in made if created and job.after is not None]
    if not ids:
        return made
    changed = store.release_ready(conn, ids) + len(store.cancel_blocked(conn, ids))
    if not changed:
        return made
    fresh = {str(i): get_job(conn, i) for i in ids}
    return [(fresh.get(job.id) or job, created) for job, created in made]


def settle(core: Core, conn: sa.Connection) -> None:
    """One sweep (the caller's transaction): dependants released or cancelled, callbacks made."""
    if not store.anything_to_settle(conn):
        return
    cancelled = store.cancel_blocked(conn)
    released = store.release_ready(conn)
    if cancelled or released:
        log_event("flow.dependants", released=released, cancelled=len(cancelled))
    finished = store.take_callbacks(conn)
    calls = [call for call in (_callback(core, job) for job in finished) if call is not None]
    if calls:
        insert_jobs(conn, calls)
        log_event("flow.callbacks", enqueued=len(calls))


def _callback(core: Core, job: Job) -> NewJob | None:
    spec = JobSpec(
        type=CALLBACK_TYPE,
        payload={"url": job.callback_url, "jobId": job.id, "body": job.to_wire()},
        tenant_id=job.tenant_id,
        correlation_id=job.correlation_id,
    )
    try:
        return core.prepare(spec)
    except SluiceError as exc:
        # The URL passed at enqueue; a setting changed since (JOBS_HTTP_ALLOW_HOSTS) refuses it
        # now. Skipped and logged: retrying could never succeed and would block the sweep.
        log_event("flow.callback_refused", jobId=job.id, error=exc.message)
        return None


class SettleHook:
    """``Drainer.on_settle``: a sweep after outcomes commit, in a transaction of its own."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def __call__(self, conn: sa.Connection) -> None:
        settle(self.core, conn)
