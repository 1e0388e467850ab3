"""Schedules: cron slots on a time zone's wall clock; every drain enqueues the due ones.

A slot is an instant. Local wall-clock times map to instants like this: a time a DST change skips
runs once, at the first instant after the gap; a time it repeats runs once, at its first
occurrence. Each slot becomes one job whose idempotency key names the schedule and the slot, so
overlapping drains (or a replayed drain) can never enqueue a slot twice.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .errors import Conflict, NotFound, SluiceError, ValidationError
from .logs import log_event
from .models import BackoffSpec, Enqueued, JobOptions, JobSpec, Text255
from .queue import guarded
from .store import schedules as store
from .store.jobs import insert_jobs

if TYPE_CHECKING:
    from .queue import Queue

NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
MAX_CATCH_UP = 100  # slots one drain enqueues for one catchUp schedule
MAX_DUE = 500  # schedules one drain looks at; the rest wait for the next drain
MAX_STEPS = 100_000  # cron candidates examined per search (a repeated hour skips up to 60)
OPTION_FIELDS = {"priority", "max_attempts", "timeout_seconds", "backoff"}
# Stored only when given, so the options of schedules that use none of them stay as they were.
FLOW_OPTION_FIELDS = {"concurrency_key", "concurrency_limit", "callback_url"}

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_NAMES = frozenset([*_MONTHS, *_DAYS, "L"])
_TOKEN = re.compile(r"\*|\?|L|\d{1,2}L?|\d#\d|[A-Za-z]{3}")


# -- cron and time zone --------------------------------------------------------------------------


def check_cron(expr: str) -> str:
    """A standard five-field expression, whitespace normalised; ValueError otherwise."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("must have five fields: minute hour day-of-month month day-of-week")
    for part in re.split(r"[,/-]", " ".join(fields).replace(" ", ",")):
        # croniter also takes R (random) and H (hashed): neither names a fixed slot.
        if not _TOKEN.fullmatch(part) or (part.isalpha() and part.upper() not in _NAMES):
            raise ValueError(f"is not a valid cron expression (bad token {part!r})")
    from croniter import CroniterError, croniter

    expr = " ".join(fields)
    if not croniter.is_valid(expr):
        raise ValueError("is not a valid cron expression")
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        raise ValueError("never matches a date") from None
    return expr


# Files of a tz database that are no IANA zone, or whose meaning is the host's: the machine's own
# zone (localtime), the POSIX default rules, "Factory", and the posix/ and right/ (leap second)
# copies. Compared in lower case: on a case-insensitive disk "LocalTime" opens the same file.
HOST_ZONES = frozenset({"localtime", "posixrules", "factory"})
HOST_ZONE_DIRS = ("posix/", "right/")
ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")


def check_timezone(name: str) -> str:
    """An IANA time zone name that this machine's tz database knows, and that means the same on
    every machine; ValueError otherwise."""
    lower = name.lower()
    if not ZONE_NAME.fullmatch(name) or lower in HOST_ZONES or lower.startswith(HOST_ZONE_DIRS):
        raise ValueError("is not an IANA time zone name (e.g. UTC, Europe/Paris)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("is not an IANA time zone name (e.g. UTC, Europe/Paris)") from None
    return name


def _exists(instant: datetime, wall: datetime, zone: ZoneInfo) -> bool:
    return instant.astimezone(zone).replace(tzinfo=None) == wall


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive local wall-clock time stands for in ``zone``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return first
    real = [t for t in (first, second) if _exists(t, wall, zone)]
    if real:
        return min(real)  # repeated: the first occurrence
    return _gap_end(min(first, second), max(first, second), zone)


def _gap_end(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant in (lo, hi]: the first instant whose offset is the later one."""
    after = hi.astimezone(zone).utcoffset()
    low, high = 0, int((hi - lo).total_seconds())
    while low < high:
        mid = (low + high) // 2
        if (lo + timedelta(seconds=mid)).astimezone(zone).utcoffset() == after:
            high = mid
        else:
            low = mid + 1
    return lo + timedelta(seconds=low)


@dataclass(frozen=True, slots=True)
class Slots:
    """The instants a cron expression names on ``zone``'s wall clock."""

    cron: str
    zone: ZoneInfo

    @classmethod
    def of(cls, cron: str, timezone: str) -> Slots:
        return cls(cron, ZoneInfo(timezone))

    def next_after(self, instant: datetime) -> datetime:
        """The first slot strictly after ``instant``."""
        from croniter import croniter

        walls = croniter(self.cron, instant.astimezone(self.zone).replace(tzinfo=None))
        for _ in range(MAX_STEPS):
            slot = wall_to_instant(walls.get_next(datetime), self.zone)
            if slot > instant:
                return slot
        raise ValueError(f"no slot of {self.cron!r} after {instant.isoformat()}")

    def latest_until(self, instant: datetime) -> datetime | None:
        """The last slot at or before ``instant`` (None if the expression never matched)."""
        from croniter import CroniterError, croniter

        local = instant.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        if local.fold:
            # In the second pass of a repeated hour the rest of that hour's first pass is already
            # past: start the search at the end of the repeat.
            wall += (local.replace(fold=0).utcoffset() or timedelta()) - (local.utcoffset() or timedelta())
        walls = croniter(self.cron, wall + timedelta(microseconds=1))
        try:
            for _ in range(MAX_STEPS):
                slot = wall_to_instant(walls.get_prev(datetime), self.zone)
                if slot <= instant:
                    return slot
        except CroniterError:
            return None
        return None

    def due(self, first: datetime, now: datetime, catch_up: bool) -> tuple[list[datetime], datetime]:
        """(slots to enqueue, the next run after them) for a schedule whose next run is ``first``."""
        if not catch_up:
            latest = self.latest_until(now)
            slot = latest if latest is not None and latest >= first else first
            return [slot], self.next_after(max(now, slot))
        slots: list[datetime] = []
        slot = first
        while slot <= now and len(slots) < MAX_CATCH_UP:
            slots.append(slot)
            slot = self.next_after(slot)
        return slots, slot


def slot_key(name: str, slot: datetime) -> str:
    return f"schedule:{name}:{slot.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


# -- the wire models -----------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    return value


CronText = Annotated[
    str, Field(min_length=1, max_length=255), AfterValidator(_no_nul), AfterValidator(check_cron)
]
ZoneName = Annotated[
    str, Field(min_length=1, max_length=64), AfterValidator(_no_nul), AfterValidator(check_timezone)
]


class ScheduleSpec(JobOptions):
    """A schedule as PUT /api/schedules/<name> takes it: camelCase, strict, unknown fields refused."""

    cron: CronText
    timezone: ZoneName = "UTC"
    type: Text255
    payload: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    catch_up: bool = False

    @model_validator(mode="after")
    def _no_burst_options(self) -> ScheduleSpec:
        # A slot's job is keyed by its slot (idempotencyKey) and names no earlier jobs.
        if self.debounce is not None or self.after is not None:
            raise ValueError("a schedule takes no debounce or after (its jobs are one per slot)")
        return self

    def options(self) -> dict[str, Any]:
        """The job options a slot's job gets (tenantId has a column of its own)."""
        options = self.model_dump(mode="json", by_alias=True, include=OPTION_FIELDS)
        flow = self.model_dump(mode="json", by_alias=True, include=FLOW_OPTION_FIELDS, exclude_none=True)
        return {**options, **flow}


class Schedule(BaseModel):
    """A stored schedule as the API shows it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    name: str
    cron: str
    timezone: str
    type: str
    payload: dict[str, Any]
    enabled: bool
    catch_up: bool
    priority: int
    max_attempts: int | None
    timeout_seconds: int | None
    backoff: BackoffSpec | None
    tenant_id: str | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: str | None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _schedule(row: store.ScheduleRow) -> Schedule:
    options = row.options or {}
    backoff = options.get("backoff")
    return Schedule(
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        type=row.type,
        payload=row.payload,
        enabled=row.enabled,
        catch_up=row.catch_up,
        priority=options.get("priority", 0),
        max_attempts=options.get("maxAttempts"),
        timeout_seconds=options.get("timeoutSeconds"),
        backoff=BackoffSpec.model_validate(backoff) if backoff else None,
        tenant_id=row.tenant_id,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        last_job_id=str(row.last_job_id) if row.last_job_id else None,
    )


def _details(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(str(p) for p in err["loc"]) or "body", "msg": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def parse_spec(body: ScheduleSpec | Mapping[str, Any]) -> ScheduleSpec:
    """A ScheduleSpec from a spec or a camelCase mapping; lib.errors.ValidationError otherwise."""
    if isinstance(body, ScheduleSpec):
        return body
    try:
        return ScheduleSpec.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        raise ValidationError("the schedule is not valid", _details(exc)) from None


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(
            "schedule names are 1–100 characters of A-Z a-z 0-9 . _ -",
            [{"loc": "name", "msg": "must match [A-Za-z0-9._-]{1,100}"}],
        )
    return name


# -- storing -------------------------------------------------------------------------------------


def _values(queue: Queue, spec: ScheduleSpec, now: datetime) -> dict[str, Any]:
    """The columns a save writes; the payload as the type's model stores it."""
    job_type = queue.registry.get(spec.type)
    payload = job_type.validate_payload(spec.payload, queue.settings)
    if job_type.sensitive:
        # Stored encrypted like a job's; enqueue_due decrypts before prepare() re-encrypts.
        from .crypto import seal

        payload = seal(payload, job_type.sensitive, queue.settings)
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
    queue: Queue, name: str, spec: ScheduleSpec | Mapping[str, Any], *, now: datetime | None = None
) -> Schedule:
    """Create or replace; a replace keeps lastRunAt and lastJobId and recomputes nextRunAt from now."""
    check_name(name)
    spec = parse_spec(spec)
    with queue.engine.begin() as conn:
        values = _values(queue, spec, now or store.db_now(conn))
        row = store.save(conn, name, values)
    log_event("schedule.put", name=name, type=spec.type, cron=spec.cron, timezone=spec.timezone)
    return _schedule(row)


@guarded
def get_schedule(queue: Queue, name: str) -> Schedule:
    with queue.reader.connect() as conn:
        row = store.get(conn, name) if NAME.fullmatch(name) else None
    if row is None:
        raise NotFound(f"no schedule {name!r}")
    return _schedule(row)


@guarded
def list_schedules(queue: Queue) -> list[Schedule]:
    """Every schedule, sorted by name."""
    with queue.reader.connect() as conn:
        return [_schedule(row) for row in store.list_all(conn)]


@guarded
def delete_schedule(queue: Queue, name: str) -> None:
    with queue.engine.begin() as conn:
        deleted = store.delete(conn, name) if NAME.fullmatch(name) else False
    if not deleted:
        raise NotFound(f"no schedule {name!r}")
    log_event("schedule.delete", name=name)


# -- declared in code ----------------------------------------------------------------------------

_declared: dict[str, ScheduleSpec] = {}
_declared_lock = threading.Lock()


def schedule(
    name: str,
    cron: str,
    type: str,
    *,
    payload: dict[str, Any] | None = None,
    timezone: str = "UTC",
    enabled: bool = True,
    catch_up: bool = False,
    **options: Any,
) -> ScheduleSpec:
    """Declare a schedule next to its job type, e.g. in a JOBS_HANDLER_MODULES module:

    ``schedule("chat-cleanup", "0 2 * * *", "cleanup.chat", timezone="UTC")``

    Each Queue writes the declared schedules to the table on its first drain (``sync_declared``),
    keeping their lastRunAt and, while cron, timezone and enabled are unchanged, their nextRunAt.
    ``options`` are job options: priority, max_attempts, timeout_seconds, backoff, tenant_id.
    """
    check_name(name)
    spec = ScheduleSpec.model_validate(
        {
            "cron": cron,
            "type": type,
            "payload": payload or {},
            "timezone": timezone,
            "enabled": enabled,
            "catch_up": catch_up,
            **options,
        },
        strict=False,
    )
    with _declared_lock:
        if _declared.get(name, spec) != spec:
            raise Conflict(f"schedule {name!r} is declared twice with different settings")
        _declared[name] = spec
    return spec


def declared() -> dict[str, ScheduleSpec]:
    with _declared_lock:
        return dict(_declared)


def undeclare(name: str) -> None:
    """Forget a code declaration (the stored schedule stays; delete it through the API)."""
    with _declared_lock:
        _declared.pop(name, None)


def _sync_one(queue: Queue, conn: sa.Connection, name: str, spec: ScheduleSpec, now: datetime) -> bool:
    values = _values(queue, spec, now)
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


def sync_declared_in(queue: Queue, conn: sa.Connection, now: datetime | None = None) -> list[str]:
    """Upsert the code-declared schedules inside the caller's transaction; returns names written."""
    specs = declared()
    if not specs:
        return []
    now = now or store.db_now(conn)
    written = []
    for name, spec in sorted(specs.items()):
        try:
            if _sync_one(queue, conn, name, spec, now):
                written.append(name)
        except SluiceError as exc:
            # A type this process doesn't load: leave the stored schedule as it is.
            log_event("schedule.sync_skipped", name=name, error=exc.message)
    if written:
        log_event("schedule.synced", names=written)
    return written


@guarded
def sync_declared(queue: Queue, *, now: datetime | None = None) -> list[str]:
    """Write the code-declared schedules to the table now; returns the names written."""
    with queue.engine.begin() as conn:
        return sync_declared_in(queue, conn, now)


# -- the drain's part ----------------------------------------------------------------------------


def _slot_specs(row: store.ScheduleRow, slots: list[datetime], queue: Queue) -> list[JobSpec]:
    payload = row.payload
    job_type = queue.registry.find(row.type)
    if job_type is not None and job_type.sensitive:
        from .crypto import unseal

        payload = unseal(payload, job_type.sensitive, queue.settings)
    base = {"type": row.type, "payload": payload, "tenantId": row.tenant_id, **(row.options or {})}
    keyed = [(slot, slot_key(row.name, slot)) for slot in slots]
    return [
        JobSpec.model_validate(
            {**base, "runAt": slot, "idempotencyKey": key, "correlationId": key}, strict=False
        )
        for slot, key in keyed
    ]


def enqueue_due(queue: Queue, conn: sa.Connection, now: datetime | None = None) -> list[Enqueued]:
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
            new = [queue.prepare(spec) for spec in _slot_specs(row, slots, queue)]
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

    def __init__(self, queue: Queue, clock: Callable[[], datetime] | None = None) -> None:
        self.queue = queue
        self.clock = clock
        self.synced = False

    def __call__(self, conn: sa.Connection) -> None:
        now = self.clock() if self.clock is not None else None
        if not self.synced:
            sync_declared_in(self.queue, conn, now)
            self.synced = True
        enqueue_due(self.queue, conn, now)
