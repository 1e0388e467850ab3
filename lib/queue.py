"""The public face of the queue: enqueue, drain, read and administer jobs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from . import flow, kick
from .config import Settings, get_settings
from .core import Core
from .db import engine_from_settings, explain, guarded
from .errors import Conflict, Forbidden, NotFound, SluiceError, Unavailable, ValidationError
from .migrate import upgrade
from .models import (
    BulkRequest,
    BulkResult,
    DrainSource,
    DrainSummary,
    Enqueued,
    Job,
    JobPage,
    JobSpec,
    JobStatus,
    QueueStatus,
)
from .ratelimit import enforce_tenant_quota, gate_factory
from .registry import Registry
from .registry import registry as default_registry
from .steps import StepList
from .steps import summaries as step_summaries
from .store import jobs as store
from .store import steps as step_store
from .store.jobs import NewJob, new_ids

if TYPE_CHECKING:
    from .drain import Drainer
    from .metrics import Metrics
    from .retention import Retention
    from .rotation import KeyRotation
    from .schedules import Schedules
    from .store.attempts import AttemptRecord

    # Named here: inside Queue, ``list`` is the method.
    AttemptList = list[AttemptRecord]

_Service = TypeVar("_Service")


def parse_id(job_id: str | uuid.UUID) -> uuid.UUID:
    """A job id from a URL; anything that isn't one of ours is simply not found."""
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise NotFound(f"no job {job_id!r}") from None


class Queue:
    """A queue on one database. Cheap to build; the one composition root: it builds the core
    (engine, settings, registry), the services it owns (``schedules``, ``retention``, ``metrics``,
    ``rotation``) and wires the features into the drain."""

    def __init__(
        self, engine: sa.Engine, settings: Settings | None = None, registry: Registry | None = None
    ) -> None:
        settings = settings or get_settings()
        self.core = Core(engine, settings, (registry or default_registry).load(settings.handler_modules))
        # The services below are built on first use: an enqueue's cold start never loads the
        # drain, schedules, retention, metrics or key rotation modules.
        self._services: dict[str, Any] = {}
        self._building = threading.RLock()
        # Enqueues that make a job ready start a drain of this deployment (None: kicks are off).
        self.kicker = kick.from_settings(self.settings)

    def _service(self, name: str, build: Callable[[], _Service]) -> _Service:
        """The service ``name``, built once (concurrent first uses share one)."""
        found: _Service | None = self._services.get(name)
        if found is not None:
            return found
        with self._building:
            if name not in self._services:
                self._services[name] = build()
            made: _Service = self._services[name]
            return made

    @property
    def drainer(self) -> Drainer:
        return self._service("drainer", self._make_drainer)

    def _make_drainer(self) -> Drainer:
        from .alerts import DeadLetterHook  # lazy: only drains load the features they wire in
        from .drain import Drainer  # lazy: an enqueue's cold start never loads the drain
        from .schedules import DueHook  # lazy: as the drain

        drainer = Drainer(
            self.engine,
            self.registry,
            self.settings.jobs_lease_grace_seconds,
            self.settings.jobs_batch_size,
            settings=self.settings,
        )
        # Drains enqueue due schedules, digest dead letters and gate rate-limited types.
        drainer.before_claim = DueHook(self.schedules)
        drainer.on_failed = DeadLetterHook(self.core)
        drainer.make_gate = gate_factory(self.engine, self.settings.rate_limits)
        # Dependants released or cancelled, callbacks enqueued, once outcomes commit.
        drainer.on_settle = flow.SettleHook(self.core)
        return drainer

    @property
    def schedules(self) -> Schedules:
        from .schedules import Schedules  # lazy: schedule routes and drains load it on first use

        return self._service("schedules", lambda: Schedules(self.core))

    @property
    def retention(self) -> Retention:
        from .retention import Retention  # lazy: only cleanup, erasure and archives need it

        return self._service("retention", lambda: Retention(self.core))

    @property
    def metrics(self) -> Metrics:
        from .metrics import Metrics  # lazy: only a metrics scrape needs it

        return self._service("metrics", lambda: Metrics(self.core))

    @property
    def rotation(self) -> KeyRotation:
        from .rotation import KeyRotation  # lazy: only a key rotation needs it

        return self._service("rotation", lambda: KeyRotation(self.core))

    @property
    def engine(self) -> sa.Engine:
        return self.core.engine

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.core.settings = settings

    @property
    def registry(self) -> Registry:
        return self.core.registry

    @property
    def single(self) -> sa.Engine:
        """For one-statement writes (reads use ``reader``); see Core.single."""
        return self.core.single

    @property
    def reader(self) -> sa.Engine:
        """For reads only (get, list, status, metrics): on SQLite they take no write lock."""
        return self.core.reader

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Queue:
        settings = settings or get_settings()
        return cls(engine_from_settings(settings), settings)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Queue:
        return cls.from_settings(Settings(database_url=url, **overrides))

    @property
    def dialect(self) -> str:
        return self.core.dialect

    def migrate(self) -> None:
        """Apply the Alembic migrations (idempotent)."""
        upgrade(self.engine)

    @contextmanager
    def _tx(self, conn: sa.Connection | None, *, atomic: bool = False) -> Iterator[sa.Connection]:
        """The caller's connection (its transaction decides), or one of our own: autocommit for
        a single statement, a real transaction when several must hold together (``atomic``)."""
        if conn is not None:
            yield conn
            return
        with (self.engine if atomic else self.single).begin() as own:
            yield own

    # -- enqueue ---------------------------------------------------------------------------

    def prepare(self, spec: JobSpec, tenant: str | None = None, job_id: uuid.UUID | None = None) -> NewJob:
        """Validate a spec against its type; ``tenant`` is the acting tenant of a scoped key."""
        return self.core.prepare(spec, tenant, job_id)

    @guarded
    def submit_many(
        self, specs: Sequence[JobSpec], *, tenant: str | None = None, conn: sa.Connection | None = None
    ) -> list[Enqueued]:
        """Enqueue all or none, in one statement; reused idempotency keys return existing jobs."""
        if not specs:
            return []
        ids = new_ids(len(specs))
        new = [self.prepare(spec, tenant, job_id) for spec, job_id in zip(specs, ids, strict=True)]
        _refuse_repeated_keys(new)
        rate = self.settings.tenant_enqueue_rate
        # The quota's check and the insert hold together only inside one transaction (its
        # advisory lock is transaction-scoped); so do a keyed insert and its read-back of
        # reused keys (all or nothing). A keyless batch is one statement (a large one a COPY after
        # a read of the clock, see store.jobs): autocommit will do.
        quota = rate is not None and any(job.tenant_id is not None for job in new)
        keyed = any(job.idempotency_key is not None for job in new)
        # A debounced insert and the check of the jobs named by ``after`` hold together with the
        # insert only in one transaction too.
        flowing = any(job.debounce_key is not None or job.after_ids is not None for job in new)
        with self._tx(conn, atomic=quota or keyed or flowing) as tx:
            enforce_tenant_quota(tx, new, rate)
            flow.check_after(tx, new)
            inserted = flow.resolve_new(tx, store.insert_jobs(tx, new))
        made = [_enqueued(job, created) for job, created in inserted]
        if self.kicker is not None and any(e.created and e.job.run_at <= e.job.created_at for e in made):
            self._kick_after_commit(self.kicker, conn)
        return made

    @staticmethod
    def _kick_after_commit(kicker: kick.Kicker, conn: sa.Connection | None) -> None:
        """Our own transaction has committed; a caller's commits later (or never: then no kick)."""
        if conn is None:
            kicker.kick()
            return
        settled = False

        def on_end(committed: bool) -> None:
            nonlocal settled
            if not settled:
                settled = True
                if committed:
                    kicker.kick()

        # Whichever ends the transaction first decides; the other listener then does nothing.
        sa.event.listen(conn, "commit", lambda _conn: on_end(True), once=True)
        sa.event.listen(conn, "rollback", lambda _conn: on_end(False), once=True)

    def submit(
        self, spec: JobSpec, *, tenant: str | None = None, conn: sa.Connection | None = None
    ) -> Enqueued:
        return self.submit_many([spec], tenant=tenant, conn=conn)[0]

    def enqueue(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        *,
        conn: sa.Connection | None = None,
        **options: Any,
    ) -> Job:
        """``q.enqueue("email.send", {"to": ...}, delay_seconds=60)``; options as in JobSpec."""
        spec = JobSpec.model_validate({"type": type, "payload": payload or {}, **options}, strict=False)
        return self.submit(spec, conn=conn).job

    def enqueue_many(self, specs: Sequence[JobSpec], *, conn: sa.Connection | None = None) -> list[Job]:
        return [e.job for e in self.submit_many(specs, conn=conn)]

    # -- drain -----------------------------------------------------------------------------

    @guarded
    def drain(
        self, max_jobs: int = 10, budget_ms: int | None = None, source: DrainSource = "api"
    ) -> DrainSummary:
        budget = budget_ms if budget_ms is not None else self.settings.jobs_drain_budget_ms
        return self.drainer.run(max_jobs, budget, source)

    @guarded
    def backlog(self) -> int:
        """Ready pending jobs: what a drain would find now."""
        with self.reader.connect() as conn:
            return store.count_ready(conn)

    # -- read and administer -----------------------------------------------------------------

    @guarded
    def get(self, job_id: str | uuid.UUID, *, tenant: str | None = None) -> Job:
        with self.reader.connect() as conn:
            job = store.get_job(conn, parse_id(job_id), tenant)
        if job is None:
            raise NotFound(f"no job {str(job_id)!r}")
        return job

    @guarded
    def list(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        tenant: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        before = None
        if cursor:
            try:
                before = uuid.UUID(cursor)
            except ValueError:
                raise ValidationError(
                    "cursor is not valid", [{"loc": "cursor", "msg": "not a cursor"}]
                ) from None
        with self.reader.connect() as conn:
            page, nxt = store.list_jobs(
                conn, status=status, type=type, tenant=tenant, limit=limit, before=before
            )
        return JobPage(jobs=page, next_cursor=str(nxt) if nxt else None)

    @guarded
    def cancel(self, job_id: str | uuid.UUID, *, tenant: str | None = None) -> Job:
        return self._transition(job_id, tenant, ("pending",), store.cancel_values, "cancelled")

    @guarded
    def retry(self, job_id: str | uuid.UUID, *, tenant: str | None = None) -> Job:
        return self._transition(job_id, tenant, ("failed", "cancelled"), store.retry_values, "retried")

    @guarded
    def attempts(self, job_id: str | uuid.UUID, *, tenant: str | None = None) -> AttemptList:
        """The job's attempts, oldest first; NotFound for a job the caller can't see."""
        from .attempts import completed_attempt  # lazy: the attempt history is read rarely
        from .store import attempts as attempt_store  # lazy: as completed_attempt

        uid = parse_id(job_id)
        with self.single.connect() as conn:
            job = store.get_job(conn, uid, tenant)
            if job is None:
                raise NotFound(f"no job {str(job_id)!r}")
            found = attempt_store.list_attempts(conn, uid)
        last = completed_attempt(job)
        return found if last is None else [*found, last]

    @guarded
    def steps(self, job_id: str | uuid.UUID, *, tenant: str | None = None) -> StepList:
        """The durable steps the job finished, in order; NotFound for a job the caller can't see."""
        uid = parse_id(job_id)
        with self.single.connect() as conn:
            if store.get_job(conn, uid, tenant) is None:
                raise NotFound(f"no job {str(job_id)!r}")
            stored = step_store.job_steps(conn, uid)
        return step_summaries(stored)

    @guarded
    def bulk_retry(self, request: BulkRequest, *, tenant: str | None = None) -> BulkResult:
        """Retry every failed or cancelled job the filters select (as retry() does, in bulk)."""
        return self._bulk(request, tenant, ("failed", "cancelled"), store.retry_values)

    @guarded
    def bulk_cancel(self, request: BulkRequest, *, tenant: str | None = None) -> BulkResult:
        """Cancel every pending job the filters select."""
        return self._bulk(request, tenant, ("pending",), store.cancel_values)

    def _bulk(
        self,
        request: BulkRequest,
        tenant: str | None,
        allowed: tuple[JobStatus, ...],
        values: Callable[[str], dict[str, Any]],
    ) -> BulkResult:
        if tenant is not None and request.tenant_id not in (None, tenant):
            raise Forbidden("a tenant key may only act on its own tenant's jobs")
        where = store.bulk_filters(request, tenant or request.tenant_id)
        if where is None:
            return BulkResult(matched=0, changed=0)
        with self.engine.begin() as conn:
            matched, changed = store.bulk_transition(
                conn, where, allowed, None if request.dry_run else values(self.dialect), request.limit
            )
        return BulkResult(matched=matched, changed=changed)

    def _transition(
        self,
        job_id: str | uuid.UUID,
        tenant: str | None,
        allowed: tuple[JobStatus, ...],
        values: Callable[[str], dict[str, Any]],
        verb: str,
    ) -> Job:
        uid = parse_id(job_id)
        with self.single.begin() as conn:
            job = store.transition(conn, uid, tenant, allowed, values(self.dialect))
            if job is not None:
                return job
            current = store.get_job(conn, uid, tenant)
        if current is None:
            raise NotFound(f"no job {str(job_id)!r}")
        raise Conflict(
            f"job is {current.status}; only {' or '.join(allowed)} jobs can be {verb}",
            {"status": current.status},
        )

    @guarded
    def status(self, *, tenant: str | None = None) -> QueueStatus:
        with self.reader.connect() as conn:
            return store.queue_status(conn, tenant)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.reader.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def check_database(self) -> SluiceError | None:
        """None when the database answers and is migrated; else what is wrong, as ConfigError
        (the setup) or Unavailable (the connection). As cheap as a ping: one empty read."""
        try:
            with self.single.connect() as conn:
                store.probe(conn)
            return None
        except sa.exc.SQLAlchemyError as exc:
            return explain(exc, self.settings.database_url) or Unavailable(
                "the database is unavailable; try again"
            )


def _enqueued(job: Job, created: bool) -> Enqueued:
    """Enqueued(job=job, created=created) for values we just built: no validation pass, and
    none of model_construct's per-field bookkeeping (which cost more than the job itself)."""
    made = Enqueued.__new__(Enqueued)
    object.__setattr__(made, "__dict__", {"job": job, "created": created})
    object.__setattr__(made, "__pydantic_fields_set__", {"job", "created"})
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made


def _refuse_repeated_keys(new: Sequence[NewJob]) -> None:
    seen: dict[tuple[str | None, str], int] = {}
    for index, job in enumerate(new):
        if job.idempotency_key is None:
            continue
        key = (job.tenant_id, job.idempotency_key)
        if key in seen:
            raise ValidationError(
                "the same idempotencyKey appears twice in one batch",
                [{"loc": f"jobs.{index}.idempotencyKey", "msg": f"repeats jobs.{seen[key]}"}],
            )
        seen[key] = index
