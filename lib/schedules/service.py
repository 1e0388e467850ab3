"""Schedules as a service the facade owns (``queue.schedules``): store them, write the ones declared
in code, and (the drain's part) enqueue every due slot.

Each slot becomes one job whose idempotency key names the schedule and the slot, so overlapping
drains (or a replayed drain) can never enqueue a slot twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

import sqlalchemy as sa

from ..core import Core, Service
from ..crypto import seal, unseal
from ..db import guarded
from ..errors import NotFound, SluiceError, ValidationError
from ..logs import log_event
from ..models import Enqueued, JobSpec
from ..store import schedules as store
from ..store.jobs import insert_jobs
from .declared import Declarations, declarations
from .models import NAME, Schedule, ScheduleSpec, _schedule, check_name, parse_spec
from .slots import Slots, slot_key

MAX_DUE = 500  # schedules one drain looks at; the rest wait for the next drain


class Schedules(Service):
    """The stored schedules of one queue, and the code-declared ones it writes (``declarations``)."""

    def __init__(self, core: Core, declared: Declarations = declarations) -> None:
        super().__init__(core)
        self.declarations = declared

    def _values(self, spec: ScheduleSpec, now: datetime) -> dict[str, Any]:
        """The columns a save writes; the payload as the type's model stores it."""
        job_type = self.core.registry.get(spec.type)
        payload = job_type.validate_payload(spec.payload, self.core.settings)
        if job_type.sensitive:
            # Stored encrypted like a job's; enqueue_due decrypts before prepare() re-encrypts.
            payload = seal(payload, job_type.sensitive, self.core.settings)
        try:
            following = Slots.of(spec.cron, spec.timezone).next_after(now) if spec.enabled else None
        except ValueError as exc:  # croniter finds no date within its search horizon
            raise ValidationError("the schedule never runs", [{"loc": "cron", "msg": str(exc)}]) from None
        return {
            "cron": spec.cron,
            "timezone": spec.timezone,
            "type": spec.type,
            "payload": payload,
            "options": spec.options(),
            "enabled": spec.enabled,
            "catch_up": spec.catch_up,
            "tenant_id": spec.tenant_id,
            "next_run_at": following,
        }

    @guarded
    def put_schedule(
        self, name: str, spec: ScheduleSpec | Mapping[str, Any], *, now: datetime | None = None
    ) -> Schedule:
        """Create or replace; a replace keeps lastRunAt and lastJobId and recomputes nextRunAt from now."""
        check_name(name)
        spec = parse_spec(spec)
        with self.core.engine.begin() as conn:
            values = self._values(spec, now or store.db_now(conn))
            row = store.save(conn, name, values)
        log_event("schedule.put", name=name, type=spec.type, cron=spec.cron, timezone=spec.timezone)
        return _schedule(row)

    @guarded
    def get_schedule(self, name: str) -> Schedule:
        with self.core.reader.connect() as conn:
            row = store.get(conn, name) if NAME.fullmatch(name) else None
        if row is None:
            raise NotFound(f"no schedule {name!r}")
        return _schedule(row)

    @guarded
    def list_schedules(self) -> list[Schedule]:
        """Every schedule, sorted by name."""
        with self.core.reader.connect() as conn:
            return [_schedule(row) for row in store.list_all(conn)]

    @guarded
    def delete_schedule(self, name: str) -> None:
        with self.core.engine.begin() as conn:
            deleted = store.delete(conn, name) if NAME.fullmatch(name) else False
        if not deleted:
            raise NotFound(f"no schedule {name!r}")
        log_event("schedule.delete", name=name)

    def _sync_one(self, conn: sa.Connection, name: str, spec: ScheduleSpec, now: datetime) -> bool:
        values = self._values(spec, now)
        existing = store.get(conn, name, lock=True)
        if existing is not None:
            timing = ("cron", "timezone", "enabled")
            if all(getattr(existing, key) == values[key] for key in timing):
                # Unchanged timing keeps the pending slot: a cold start must not skip a due run.
                values["next_run_at"] = existing.next_run_at
            if all(getattr(existing, key) == values[key] for key in store.SAVED_COLUMNS):
                return False
        store.save(conn, name, values)
        return True

    def sync_declared_in(self, conn: sa.Connection, now: datetime | None = None) -> list[str]:
        """Upsert the code-declared schedules inside the caller's transaction; returns names written."""
        specs = self.declarations.all()
        if not specs:
            return []
        now = now or store.db_now(conn)
        written = []
        for name, spec in sorted(specs.items()):
            try:
                if self._sync_one(conn, name, spec, now):
                    written.append(name)
            except SluiceError as exc:
                # A type this process doesn't load: leave the stored schedule as it is.
                log_event("schedule.sync_skipped", name=name, error=exc.message)
        if written:
            log_event("schedule.synced", names=written)
        return written

    @guarded
    def sync_declared(self, *, now: datetime | None = None) -> list[str]:
        """Write the code-declared schedules to the table now; returns the names written."""
        with self.core.engine.begin() as conn:
            return self.sync_declared_in(conn, now)

    def _slot_specs(self, row: store.ScheduleRow, slots: list[datetime]) -> list[JobSpec]:
        payload = row.payload
        job_type = self.core.registry.find(row.type)
        if job_type is not None and job_type.sensitive:
            payload = unseal(payload, job_type.sensitive, self.core.settings)
        base = {"type": row.type, "payload": payload, "tenantId": row.tenant_id, **(row.options or {})}
        keyed = [(slot, slot_key(row.name, slot)) for slot in slots]
        return [
            JobSpec.model_validate(
                {**base, "runAt": slot, "idempotencyKey": key, "correlationId": key}, strict=False
            )
            for slot, key in keyed
        ]

    def enqueue_due(self, conn: sa.Connection, now: datetime | None = None) -> list[Enqueued]:
        """Enqueue every enabled schedule's due slots, inside the caller's (the drain's) transaction.

        Without catchUp only the latest due slot is enqueued; with it every missed slot, at most
        MAX_CATCH_UP per drain. Each slot's job has runAt = the slot and idempotency key
        ``schedule:<name>:<slot>``; the advance is fenced on the old nextRunAt.
        """
        rows = store.due(conn, now, MAX_DUE)
        if not rows:
            return []  # the common case costs one indexed query
        now = now or store.db_now(conn)
        made: list[Enqueued] = []
        for row in rows:
            assert row.next_run_at is not None  # due() only returns scheduled rows
            try:
                slots, following = Slots.of(row.cron, row.timezone).due(row.next_run_at, now, row.catch_up)
                new = [self.core.prepare(spec) for spec in self._slot_specs(row, slots)]
            except (SluiceError, ValueError, ZoneInfoNotFoundError) as exc:
                # Left due, so it runs once the type is loaded again or the schedule is fixed.
                message = exc.message if isinstance(exc, SluiceError) else str(exc)
                log_event("schedule.skipped", name=row.name, type=row.type, error=message)
                continue
            results = [Enqueued(job=job, created=created) for job, created in insert_jobs(conn, new)]
            last = results[-1].job
            store.advance(
                conn,
                row.name,
                old_next=row.next_run_at,
                new_next=following,
                last_run_at=slots[-1],
                last_job_id=uuid.UUID(last.id),
            )
            made.extend(results)
            log_event(
                "schedule.enqueued",
                name=row.name,
                slots=len(slots),
                created=sum(1 for r in results if r.created),
                nextRunAt=following,
            )
        return made


class DueHook:
    """``Drainer.before_claim``: on a queue's first drain write the code-declared schedules, then
    on every drain enqueue the due slots. ``clock`` (tests) replaces the database clock."""

    def __init__(self, schedules: Schedules, clock: Callable[[], datetime] | None = None) -> None:
        self.schedules = schedules
        self.clock = clock
        self.synced = False

    def __call__(self, conn: sa.Connection) -> None:
        now = self.clock() if self.clock is not None else None
        if not self.synced:
            self.schedules.sync_declared_in(conn, now)
            self.synced = True
        self.schedules.enqueue_due(conn, now)
