"""Enqueue, read and administer jobs."""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from ..errors import Unavailable
from ..models import JOB_STATUSES, BulkRequest, DrainRecord, DrainSummary, Job, JobStatus, QueueStatus
from ..schema import IDEMPOTENCY_TENANT, UTCDateTime, attempts, drains, job_columns, jobs
from ..schema import idle_drains as idle_drains_table
from .clock import now, now_plus
from .notify import CHANNEL

JOB_COLUMNS = job_columns()
# Insert/read-back rounds for keys whose job vanishes in between (each round is a fresh race).
KEY_ROUNDS = 5


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so ``ORDER BY id`` is creation order and pages are stable."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[uuid.UUID]:
    """``n`` UUIDv7s from one read of the random source (a batch's ids: one system call, not n)."""
    ms = (time.time_ns() // 1_000_000) & (2**48 - 1)
    entropy = os.urandom(10 * n)
    out = []
    for i in range(0, 10 * n, 10):
        rand = int.from_bytes(entropy[i : i + 10], "big")
        value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62
        out.append(_uuid(value | (rand & (2**62 - 1))))
    return out


def _uuid(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` for a value we built in range, without its checks (a third of the
    cost of an id in a batch)."""
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


_JOB_FIELDS = frozenset(Job.model_fields)


def trusted_job(values: dict[str, Any]) -> Job:
    """A Job from complete values we produced ourselves: what ``model_construct`` does, without
    its per-field bookkeeping (12 µs → 2 µs a job, which is most of a batch enqueue's CPU)."""
    job = Job.__new__(Job)
    object.__setattr__(job, "__dict__", values)
    object.__setattr__(job, "__pydantic_fields_set__", set(_JOB_FIELDS))
    object.__setattr__(job, "__pydantic_extra__", None)
    object.__setattr__(job, "__pydantic_private__", None)
    return job


def to_job(row: Any) -> Job:
    """A database row → Job, trusting the row (no validation on the way out)."""
    # The column after_ids is the job's ``after``, in its place among the fields.
    values = {("after" if name == "after_ids" else name): value for name, value in row._mapping.items()}
    values["id"] = str(values["id"])
    if values["status"] == "completed":
        # A finished job is all done, whatever the handler last reported (API.md).
        values["progress"] = 100
    return trusted_job(values)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class NewJob:
    """A validated job ready to insert; run_at None means now + delay_seconds (database clock)."""

    id: uuid.UUID
    id_text: str  # str(id), made once: the JSON document, the default correlation id and the Job
    type: str
    payload: dict[str, Any]
    payload_json: str  # the same, as the text PostgreSQL receives
    priority: int
    max_attempts: int
    timeout_seconds: int
    backoff_strategy: str
    backoff_delay: int
    backoff_max: int
    run_at: datetime | None
    delay_seconds: float
    tenant_id: str | None
    correlation_id: str
    idempotency_key: str | None
    # Flow control (lib/flow.py); a job with ``after_ids`` is inserted held (HELD_RUN_AT).
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    debounce_key: str | None = None
    debounce_seconds: int = 0
    after_ids: list[str] | None = None
    callback_url: str | None = None


# A job waiting for the jobs it names is due at this time: never, until they complete.
HELD_RUN_AT = datetime(9999, 12, 31, tzinfo=UTC)


def insert_jobs(conn: sa.Connection, new: Sequence[NewJob]) -> list[tuple[Job, bool]]:
    """Insert in one statement; a reused idempotency key yields the existing job, created=False.
    A keyed insert must run in a transaction (the read-back of reused keys belongs with it): a
    job holding a key may be deleted (cleanup, erase) between the insert that saw it and the
    read-back, and then this batch's job is inserted after all."""
    debounced = {job.id: _insert_debounced(conn, job) for job in new if job.debounce_key is not None}
    times = (
        _insert(conn, [job for job in new if job.debounce_key is None]) if len(debounced) < len(new) else {}
    )
    missing = [job for job in new if job.id not in times and job.id not in debounced]
    existing: dict[tuple[str, str | None], Job] = {}
    for _ in range(KEY_ROUNDS):
        if not missing:
            break
        existing.update(_existing_by_key(conn, missing))
        vanished = [job for job in missing if (job.tenant_id or "", job.idempotency_key) not in existing]
        if vanished:
            times.update(_insert(conn, vanished))
        missing = [job for job in vanished if job.id not in times]
    if missing:
        raise Unavailable("the idempotency keys of this batch kept changing hands; try again")
    utc = functools.lru_cache(maxsize=64)(_utc)  # a batch shares a handful of distinct times
    out: list[tuple[Job, bool]] = []
    for job in new:
        made = times.get(job.id)
        if job.id in debounced:
            out.append(debounced[job.id])
        elif made is None:
            out.append((existing[(job.tenant_id or "", job.idempotency_key)], False))
        else:
            out.append((_new_job(job, utc(made[0]), utc(made[1])), True))
    return out


def _insert(conn: sa.Connection, new: Sequence[NewJob]) -> dict[uuid.UUID, tuple[datetime, datetime]]:
    """{id: (run_at, created_at)} of the jobs inserted; those whose key is taken are left out."""
    if conn.dialect.name == "postgresql":
        if len(new) >= COPY_MIN_ROWS and all(job.idempotency_key is None for job in new):
            return _copy(conn, new)
        return {row.id: (row.run_at, row.created_at) for row in conn.execute(_INSERT_PG, _rows_json(new))}
    return _insert_sqlite(conn, new)


# Keyless batches this big go in by COPY: half the server's work of the INSERT, and no rows to read
# back. Without a key nothing can conflict (ids are new), so every job is inserted, as by the INSERT;
# keyed batches keep INSERT ... ON CONFLICT (a re-posted key returns the existing job).
COPY_MIN_ROWS = 100
_COPY_PG = (
    "COPY sluice_jobs (id, type, payload, status, priority, attempts, max_attempts, timeout_seconds,"
    " backoff_strategy, backoff_delay, backoff_max, run_at, created_at, tenant_id, correlation_id,"
    " concurrency_key, concurrency_limit, after_ids, callback_url)"
    " FROM STDIN"
)
_NOW = sa.text("SELECT now()")
_NOTIFY = sa.text(f"SELECT pg_notify('{CHANNEL}', '')")


def _copy(conn: sa.Connection, new: Sequence[NewJob]) -> dict[uuid.UUID, tuple[datetime, datetime]]:
    """COPY the batch with the times the INSERT would give it: created_at is the transaction's now()
    (read first, in the same transaction), run_at that plus the delay, or the given runAt."""
    import psycopg  # lazy: only PostgreSQL batches come here; a cold start or SQLite never loads it

    created: datetime = conn.execute(_NOW).scalar_one()
    times = {job.id: (job.run_at or created + timedelta(seconds=job.delay_seconds), created) for job in new}
    stamp = functools.lru_cache(maxsize=64)(datetime.isoformat)
    text = functools.lru_cache(maxsize=256)(_copy_text)
    lines = "".join(
        f"{j.id_text}\t{text(j.type)}\t{_copy_escape(j.payload_json)}\tpending\t{j.priority}\t0\t"
        f"{j.max_attempts}\t{j.timeout_seconds}\t{j.backoff_strategy}\t{j.backoff_delay}\t{j.backoff_max}\t"
        f"{stamp(times[j.id][0])}\t{stamp(created)}\t{text(j.tenant_id)}\t{text(j.correlation_id)}\t"
        f"{_copy_flow(j)}\n"
        for j in new
    )
    raw: Any = conn.connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(_COPY_PG) as copy:
            copy.write(lines)
    except psycopg.OperationalError as exc:
        raise Unavailable("the database is unavailable; try again") from exc
    if any(run_at <= created for run_at, _ in times.values()):
        conn.execute(_NOTIFY)  # as the INSERT's own notification (lib/store/notify.py)
    return times


_NO_FLOW = "\\N\t\\N\t\\N\t\\N"


def _copy_flow(job: NewJob) -> str:
    """The flow-control columns of a COPY line (concurrency key and limit, after, callback URL)."""
    if job.concurrency_key is None and job.after_ids is None and job.callback_url is None:
        return _NO_FLOW
    limit = "\\N" if job.concurrency_limit is None else str(job.concurrency_limit)
    after = "\\N" if job.after_ids is None else _copy_escape(json.dumps(job.after_ids))
    return f"{_copy_text(job.concurrency_key)}\t{limit}\t{after}\t{_copy_text(job.callback_url)}"


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else _copy_escape(value)


def _copy_escape(value: str) -> str:
    """COPY's text format: backslash, tab, newline and carriage return are escaped (\\N is NULL).
    JSON text holds no raw control characters, so a payload usually needs no work at all."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


# One JSON document in, one short statement out: psycopg caches its parse, whatever the batch size
# (a 1000-row VALUES list is re-parsed client-side on every call and costs more than the insert).
_INSERT_PG = sa.text(
    """
    INSERT INTO sluice_jobs (id, type, payload, status, priority, attempts, max_attempts,
        timeout_seconds, backoff_strategy, backoff_delay, backoff_max, run_at, created_at,
        tenant_id, correlation_id, idempotency_key, concurrency_key, concurrency_limit, after_ids,
        callback_url)
    SELECT v.i, v.t, v.p, 'pending', v.pr, 0, v.ma, v.tm, v.bs, v.bd, v.bm,
        COALESCE(v.ra, now() + make_interval(secs => v.d)), now(), v.te, v.co, v.k, v.ck, v.cl, v.af,
        v.cb
    FROM json_to_recordset(CAST(:rows AS json))
      AS v(i uuid, t text, p jsonb, pr int, ma int, tm int, bs text, bd int, bm int,
           ra timestamptz, d float8, te text, co text, k text, ck text, cl int, af jsonb, cb text)
    ON CONFLICT (coalesce(tenant_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING id, run_at, created_at
    """
)
# The same statement wakes `drain --loop` workers (lib/store/notify.py) when it made a job ready now:
# one notification per statement, not per job, delivered at commit (so never for a rolled-back batch).
_INSERT_PG = sa.text(
    f"""
    WITH ins AS ({_INSERT_PG.text}),
    woke AS MATERIALIZED (
        SELECT pg_notify('{CHANNEL}', '') FROM (SELECT 1 FROM ins WHERE run_at <= created_at LIMIT 1) AS r
    )
    SELECT ins.id, ins.run_at, ins.created_at FROM ins LEFT JOIN woke ON true
    """
)


def _json_string(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


def _correlation(job: NewJob) -> str:
    # The default correlation id is the id's own text: nothing in it needs escaping.
    return f'"{job.id_text}"' if job.correlation_id is job.id_text else _json_string(job.correlation_id)


def _rows_json(new: Sequence[NewJob]) -> dict[str, str]:
    """The batch as one JSON document, written by hand around each job's payload text: a
    parameter the driver sends as is (per-element array quoting cost more than the insert)."""
    # Types and tenants repeat across a batch: each distinct string is quoted once.
    text = functools.lru_cache(maxsize=256)(_json_string)
    rows = [
        f'{{"i":"{j.id_text}","t":{text(j.type)},"p":{j.payload_json},"pr":{j.priority},'
        f'"ma":{j.max_attempts},"tm":{j.timeout_seconds},"bs":"{j.backoff_strategy}",'
        f'"bd":{j.backoff_delay},"bm":{j.backoff_max},'
        f'"ra":{text(j.run_at.isoformat() if j.run_at else None)},"d":{j.delay_seconds},'
        f'"te":{text(j.tenant_id)},"k":{_json_string(j.idempotency_key)},"co":{_correlation(j)}'
        f"{_flow_json(j)}}}"
        for j in new
    ]
    return {"rows": "[" + ",".join(rows) + "]"}


def _flow_json(job: NewJob) -> str:
    """The flow-control fields of one row, left out entirely for a plain job (the common case)."""
    if job.concurrency_key is None and job.after_ids is None and job.callback_url is None:
        return ""
    return (
        f',"ck":{_json_string(job.concurrency_key)},"cl":{json.dumps(job.concurrency_limit)},'
        f'"af":{json.dumps(job.after_ids)},"cb":{_json_string(job.callback_url)}'
    )


def _insert_sqlite(conn: sa.Connection, new: Sequence[NewJob]) -> dict[uuid.UUID, tuple[datetime, datetime]]:
    stmt = (
        sqlite.insert(jobs)
        .values(
            run_at=sa.func.coalesce(
                sa.bindparam("p_run_at", type_=UTCDateTime()),
                now_plus("sqlite", sa.bindparam("p_delay", type_=sa.Float())),
            ),
            created_at=now("sqlite"),
        )
        .on_conflict_do_nothing(
            index_elements=[IDEMPOTENCY_TENANT, jobs.c.idempotency_key],
            index_where=jobs.c.idempotency_key.is_not(None),
        )
        .returning(jobs.c.id, jobs.c.run_at, jobs.c.created_at)
    )
    params = [_insert_params(job) for job in new]
    rows = conn.execute(stmt, params) if len(params) > 1 else conn.execute(stmt, params[0])
    return {row.id: (row.run_at, row.created_at) for row in rows}


def _insert_params(job: NewJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.type,
        "payload": job.payload,
        "status": "pending",
        "priority": job.priority,
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "timeout_seconds": job.timeout_seconds,
        "backoff_strategy": job.backoff_strategy,
        "backoff_delay": job.backoff_delay,
        "backoff_max": job.backoff_max,
        "p_run_at": job.run_at,
        "p_delay": job.delay_seconds,
        "tenant_id": job.tenant_id,
        "correlation_id": job.correlation_id,
        "idempotency_key": job.idempotency_key,
        "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit,
        "debounce_key": job.debounce_key,
        "after_ids": job.after_ids,
        "callback_url": job.callback_url,
    }


def _insert_debounced(conn: sa.Connection, job: NewJob) -> tuple[Job, bool]:
    """Insert a debounced job, or fold it into the pending job of the same tenant holding its key:
    that job takes this payload and is due ``debounce_seconds`` from now (one statement, so two
    concurrent enqueues of one key can't both insert)."""
    dialect = conn.dialect.name
    insert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # lazy: an SQLite app never loads it

        insert = postgresql.insert(jobs)
    else:
        insert = sqlite.insert(jobs)
    params = _insert_params(job)
    del params["p_run_at"], params["p_delay"]
    due = now_plus(dialect, float(job.debounce_seconds))
    stmt = (
        insert.values(**params, run_at=due, created_at=now(dialect))
        .on_conflict_do_update(
            index_elements=[IDEMPOTENCY_TENANT, jobs.c.debounce_key],
            index_where=sa.and_(jobs.c.status == "pending", jobs.c.debounce_key.is_not(None)),
            set_={"payload": insert.excluded.payload, "run_at": insert.excluded.run_at},
        )
        .returning(*JOB_COLUMNS)
    )
    row = conn.execute(stmt).one()
    made = to_job(row)
    return made, row.id == job.id


def _new_job(job: NewJob, run_at: datetime, created_at: datetime) -> Job:
    """The Job just inserted, built from what we sent plus the (UTC) times the database chose."""
    return trusted_job(
        {
            "id": job.id_text,
            "type": job.type,
            "payload": job.payload,
            "status": "pending",
            "priority": job.priority,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "timeout_seconds": job.timeout_seconds,
            "run_at": run_at,
            "created_at": created_at,
            "started_at": None,
            "finished_at": None,
            "last_error": None,
            "result": None,
            "progress": None,
            "tenant_id": job.tenant_id,
            "correlation_id": job.correlation_id,
            "idempotency_key": job.idempotency_key,
            "step": None,
            "concurrency_key": job.concurrency_key,
            "concurrency_limit": job.concurrency_limit,
            "debounce_key": job.debounce_key,
            "after": job.after_ids,
            "callback_url": job.callback_url,
        }
    )


def _existing_by_key(conn: sa.Connection, new: Sequence[NewJob]) -> dict[tuple[str, str | None], Job]:
    keys = {(job.tenant_id or "", job.idempotency_key) for job in new}
    if None in {key for _, key in keys}:
        # Only a keyed insert can conflict; a keyless one missing means the insert itself broke.
        raise RuntimeError("an insert without idempotency key returned no row")
    stmt = sa.select(*JOB_COLUMNS).where(
        sa.tuple_(IDEMPOTENCY_TENANT, jobs.c.idempotency_key).in_(list(keys)),
        jobs.c.idempotency_key.is_not(None),
    )
    return {(row.tenant_id or "", row.idempotency_key): to_job(row) for row in conn.execute(stmt)}


def _scoped(stmt: Any, job_id: uuid.UUID, tenant: str | None) -> Any:
    stmt = stmt.where(jobs.c.id == job_id)
    return stmt.where(jobs.c.tenant_id == tenant) if tenant is not None else stmt


def get_job(conn: sa.Connection, job_id: uuid.UUID, tenant: str | None = None) -> Job | None:
    row = conn.execute(_scoped(sa.select(*JOB_COLUMNS), job_id, tenant)).first()
    return to_job(row) if row else None


def list_jobs(
    conn: sa.Connection,
    *,
    status: JobStatus | None,
    type: str | None,
    tenant: str | None,
    limit: int,
    before: uuid.UUID | None,
) -> tuple[list[Job], uuid.UUID | None]:
    """Newest first, keyset-paginated on the time-ordered id; returns (page, next cursor)."""
    stmt = sa.select(*JOB_COLUMNS).order_by(jobs.c.id.desc()).limit(limit + 1)
    if status is not None:
        stmt = stmt.where(jobs.c.status == status)
    if type is not None:
        stmt = stmt.where(jobs.c.type == type)
    if tenant is not None:
        stmt = stmt.where(jobs.c.tenant_id == tenant)
    if before is not None:
        stmt = stmt.where(jobs.c.id < before)
    page = [to_job(row) for row in conn.execute(stmt)]
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, uuid.UUID(page[-1].id)


def transition(
    conn: sa.Connection,
    job_id: uuid.UUID,
    tenant: str | None,
    from_statuses: Sequence[JobStatus],
    values: dict[str, Any],
) -> Job | None:
    """Move a job between states if it is in one of ``from_statuses``; None if it was not."""
    stmt = _scoped(sa.update(jobs), job_id, tenant).where(jobs.c.status.in_(from_statuses))
    row = conn.execute(stmt.values(**values).returning(*JOB_COLUMNS)).first()
    return to_job(row) if row else None


def cancel_values(dialect: str) -> dict[str, Any]:
    return {"status": "cancelled", "finished_at": now(dialect)}


def retry_values(dialect: str) -> dict[str, Any]:
    """Back to pending and due now, attempts reset; lastError stays as history. A job with
    ``after`` is held again until its dependencies complete (the next sweep decides)."""
    return {
        "status": "pending",
        "attempts": 0,
        "run_at": sa.case(
            (jobs.c.after_ids.is_(None), now(dialect)), else_=sa.literal(HELD_RUN_AT, UTCDateTime())
        ),
        "started_at": None,
        "finished_at": None,
        "result": None,
        "progress": None,
        "step": None,
        # A new end gets a callback of its own.
        "callback_sent_at": None,
    }


def bulk_filters(request: BulkRequest, tenant: str | None) -> list[sa.ColumnElement[bool]] | None:
    """The request's filters as conditions; None when its ids name no job at all."""
    where: list[sa.ColumnElement[bool]] = []
    if request.ids is not None:
        ids = [uid for uid in (_maybe_id(text) for text in request.ids) if uid is not None]
        if not ids:
            return None
        where.append(jobs.c.id.in_(ids))
    if request.status is not None:
        where.append(jobs.c.status == request.status)
    if request.type is not None:
        where.append(jobs.c.type == request.type)
    if tenant is not None:
        where.append(jobs.c.tenant_id == tenant)
    if request.created_before is not None:
        where.append(jobs.c.created_at < request.created_before)
    return where


def _maybe_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def bulk_transition(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    from_statuses: Sequence[JobStatus],
    values: dict[str, Any] | None,
    limit: int,
) -> tuple[int, int]:
    """Up to ``limit`` jobs matching ``where`` and in one of ``from_statuses`` (oldest first):
    (how many, how many moved to ``values``). ``values`` None: count only (a dry run). The update
    re-checks the status, so a job that moved meanwhile is left alone and not counted."""
    eligible = [*where, jobs.c.status.in_(from_statuses)]
    ids = list(conn.execute(sa.select(jobs.c.id).where(*eligible).order_by(jobs.c.id).limit(limit)).scalars())
    if values is None or not ids:
        return len(ids), 0
    changed = 0
    for start in range(0, len(ids), 1000):  # bounded statements: at most 1000 bound ids each
        chunk = ids[start : start + 1000]
        stmt = sa.update(jobs).where(jobs.c.id.in_(chunk), jobs.c.status.in_(from_statuses))
        changed += conn.execute(stmt.values(**values)).rowcount
    return len(ids), changed


def probe(conn: sa.Connection) -> None:
    """Fails unless the database answers and holds the latest schema (the newest table and
    column are named); reads no row."""
    conn.execute(sa.select(jobs.c.step).where(sa.false()).limit(1)).all()
    conn.execute(sa.select(attempts.c.id).where(sa.false()).limit(1)).all()


def count_ready(conn: sa.Connection) -> int:
    dialect = conn.dialect.name
    stmt = sa.select(sa.func.count()).where(jobs.c.status == "pending", jobs.c.run_at <= now(dialect))
    return int(conn.execute(stmt).scalar_one())


def queue_status(conn: sa.Connection, tenant: str | None) -> QueueStatus:
    dialect = conn.dialect.name
    scope = [jobs.c.tenant_id == tenant] if tenant is not None else []
    by_type: dict[str, dict[str, int]] = {}
    counts: dict[JobStatus, int] = dict.fromkeys(JOB_STATUSES, 0)
    grouped = sa.select(jobs.c.type, jobs.c.status, sa.func.count()).where(*scope)
    for type_, status, n in conn.execute(grouped.group_by(jobs.c.type, jobs.c.status)):
        by_type.setdefault(type_, {})[status] = n
        counts[status] += n
    clock = now(dialect)
    is_ready = jobs.c.run_at <= clock
    pending = sa.select(
        clock.label("now"),
        sa.func.coalesce(sa.func.sum(sa.case((is_ready, 1), else_=0)), 0),
        sa.func.min(sa.case((is_ready, jobs.c.run_at), else_=None)),
    ).where(jobs.c.status == "pending", *scope)
    db_now, ready, oldest_raw = conn.execute(pending).one()
    ready = int(ready)
    oldest = _as_utc(oldest_raw)
    db_now = _as_utc(db_now)
    listed = (
        sa.select(*JOB_COLUMNS)
        .where(jobs.c.status == "pending", is_ready, *scope)
        .order_by(jobs.c.run_at, jobs.c.id)
        .limit(20)
    )
    return QueueStatus(
        counts=counts,
        ready=ready,
        scheduled=counts["pending"] - ready,
        oldest_ready_age_seconds=(
            round(max(0.0, (db_now - oldest).total_seconds()), 3) if oldest and db_now else None
        ),
        by_type=by_type,
        last_drain=None if tenant is not None else last_drain(conn),
        pending=[to_job(row) for row in conn.execute(listed)],
    )


def _as_utc(value: datetime | str | None) -> datetime | None:
    """Aggregates lose column types on SQLite (text comes back); read them as UTC datetimes."""
    return None if value is None else _utc(value)


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record_drain(conn: sa.Connection, summary: DrainSummary, source: str) -> None:
    """A history row for a drain that did something; one that found nothing is only counted
    (per source), so the last row is always the last drain that did work."""
    if not (summary.processed or summary.retried or summary.failed):
        count_idle_drain(conn, source)
        return
    conn.execute(
        sa.insert(drains).values(
            at=now(conn.dialect.name),
            source=source,
            processed=summary.processed,
            succeeded=summary.succeeded,
            retried=summary.retried,
            failed=summary.failed,
            duration_ms=summary.duration_ms,
            stopped_by=summary.stopped_by,
        )
    )


_IDLE_UPSERT = (
    "INSERT INTO sluice_idle_drains (source, count, last_at) VALUES (:source, 1, {now}) "
    "ON CONFLICT (source) DO UPDATE SET count = sluice_idle_drains.count + 1, last_at = excluded.last_at"
)
_IDLE_PG = sa.text(_IDLE_UPSERT.format(now="now()"))
_IDLE_SQLITE = sa.text(_IDLE_UPSERT.format(now="strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"))


def count_idle_drain(conn: sa.Connection, source: str) -> None:
    statement = _IDLE_PG if conn.dialect.name == "postgresql" else _IDLE_SQLITE
    conn.execute(statement, {"source": source})


def idle_drains(conn: sa.Connection) -> dict[str, tuple[int, datetime]]:
    """{source: (drains that found nothing, when the last of them ran)}."""
    table = idle_drains_table
    rows = conn.execute(sa.select(table.c.source, table.c.count, table.c.last_at))
    return {source: (int(n), at) for source, n, at in rows}


def last_drain(conn: sa.Connection) -> DrainRecord | None:
    stmt = sa.select(drains).order_by(drains.c.id.desc()).limit(1)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return DrainRecord(
        at=row.at,
        source=row.source,
        processed=row.processed,
        duration_ms=row.duration_ms,
        stopped_by=row.stopped_by,
    )


MAX_STEP_CHARS = 255


def set_progress_step(
    conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID, percent: int, step: str | None
) -> bool:
    """A running job's progress, and its step text when given; fenced on its claim like every
    write after a claim. The text is cut to the column and made storable (no U+0000)."""
    values: dict[str, Any] = {"progress": percent}
    if step is not None:
        values["step"] = step[:MAX_STEP_CHARS].replace("\x00", "\ufffd")
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.claim_token == token, jobs.c.status == "processing")
        .values(**values)
    )
    return bool(conn.execute(stmt).rowcount)
