"""The drain's statements: reclaim, claim a batch, start, renew leases, record outcomes, release.

Every write after a claim is fenced on id + claim_token + status='processing', so a worker whose
lease expired and was taken over changes nothing.

Leases: a claim holds each job for min(timeout, HOLD_SECONDS) + grace; the drain renews the leases
of what it still holds while it runs, and a job whose timeout is longer than that hold (or whose
lease was last renewed too long ago) gets its own start write, so from its start a job's lease
always covers its whole timeout plus at least half the grace.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from ..jsontext import storable_json
from ..retry import Backoff, Strategy
from ..schema import JSONDoc, jobs
from .clock import now, now_plus

LEASE_EXPIRED = "lease expired: the worker did not finish within the job's timeout plus grace"
# How long a claimed job that has not started yet is held at most (plus grace) if its drain dies:
# long enough that ordinary jobs (timeouts up to this) start without a write of their own.
HOLD_SECONDS = 120


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this drain holds the lease on."""

    id: uuid.UUID
    type: str
    payload: Any
    attempt: int
    max_attempts: int
    timeout_seconds: int
    backoff: Backoff
    tenant_id: str | None
    correlation_id: str


OutcomeKind = Literal["completed", "retried", "failed", "deferred"]


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 µs per job on a fast drain
class Outcome:
    """How one attempt ended. ``pending`` = retry after ``delay``; ``refund`` uncounts the attempt.

    ``attempt``, ``started``/``finished`` (time.monotonic() of this process) and ``traceback`` are
    what a per-attempt history needs (the database's now() at the flush less how long ago an
    instant was gives its database time)."""

    id: uuid.UUID
    status: Literal["completed", "pending", "failed"]
    result: str | None = None  # JSON text
    error: str | None = None
    delay: float = 0.0
    refund: int = 0
    attempt: int = 0
    started: float | None = None
    finished: float | None = None
    traceback: str | None = None

    @property
    def kind(self) -> OutcomeKind:
        if self.status == "pending":
            return "deferred" if self.refund else "retried"
        return self.status


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch's outcomes actually changed (a fenced-out write counts nowhere)."""

    succeeded: int
    retried: int
    failed_ids: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class Reclaimed:
    retried: int
    failed_ids: list[uuid.UUID]


def _fence(token: uuid.UUID) -> list[sa.ColumnElement[bool]]:
    return [jobs.c.claim_token == token, jobs.c.status == "processing"]


def reclaim_expired(conn: sa.Connection) -> Reclaimed:
    """Jobs whose lease ran out (their worker crashed or hung): retry now, or fail if exhausted."""
    dialect = conn.dialect.name
    clock = now(dialect)
    expired = [jobs.c.status == "processing", jobs.c.lease_expires_at < clock]
    released = {"lease_expires_at": None, "claim_token": None, "last_error": LEASE_EXPIRED}
    failed = conn.execute(
        sa.update(jobs)
        .where(*expired, jobs.c.attempts >= jobs.c.max_attempts)
        .values(status="failed", finished_at=clock, **released)
        .returning(jobs.c.id)
    ).scalars()
    failed_ids = list(failed)
    # The lease itself (timeout + grace) was the wait, so the retry is due at once.
    retried = conn.execute(
        sa.update(jobs).where(*expired).values(status="pending", run_at=clock, **released)
    ).rowcount
    return Reclaimed(retried=retried, failed_ids=failed_ids)


_CLAIM_COLUMNS = (
    "id, type, payload, attempts, max_attempts, timeout_seconds, backoff_strategy, backoff_delay, "
    "backoff_max, tenant_id, correlation_id"
)

# Fair share and concurrency keys, in the claim itself:
# - tenants: the tenants with pending jobs, walked on ix_sluice_jobs_fair and ix_sluice_jobs_keyed
#   (one index probe each, at most :tenants of them), so a backlog of 100,000 jobs of one tenant
#   costs nothing to skip;
# - candidates: each tenant's first due jobs in claim order, plain and keyed apart (a backlog of
#   one key never crowds plain jobs out), at most 5/4 * limit / (tenants) of each (all of one
#   tenant's share when it is alone); keys already at their limit are left out;
# - busy: jobs processing per (tenant, concurrency key); a key gets at most limit - busy more;
# - the batch takes the tenants' jobs in turns (row_number per tenant), so B's 10 jobs come in
#   the next batch however long A's backlog is.
# Keyed jobs are candidates only when the claim holds KEYED_LOCK (see claim_batch), so counting
# busy keys is exact: READ COMMITTED gives this statement a snapshot taken after the lock, and
# every claim that added to a key committed before releasing it.
_PLAIN = "status = 'pending' AND concurrency_key IS NULL"
_KEYED = "status = 'pending' AND concurrency_key IS NOT NULL"


def _next_tenant(after: str, least: str) -> str:
    """The lowest tenant above ``after`` with a pending job, plain or keyed (two index probes)."""
    probes = [
        f"(SELECT coalesce(tenant_id, '') FROM sluice_jobs WHERE {which}{after} "
        "ORDER BY coalesce(tenant_id, '') LIMIT 1)"
        for which in (_PLAIN, _KEYED)
    ]
    return least.format(a=probes[0], b=probes[1])


def _fair(least: str) -> str:
    return f"""
    tenants(t, n) AS (
      SELECT {_next_tenant("", least)} AS t, 1 AS n
      UNION ALL
      SELECT {_next_tenant(" AND coalesce(tenant_id, '') > tenants.t", least)}, n + 1
      FROM tenants WHERE tenants.t IS NOT NULL AND n < :tenants
    ),
    busy AS (
      SELECT coalesce(tenant_id, '') AS t, concurrency_key AS k, count(*) AS n FROM sluice_jobs
      WHERE status = 'processing' AND concurrency_key IS NOT NULL AND :keyed
      GROUP BY coalesce(tenant_id, ''), concurrency_key
    )"""


_PICK = """
    ranked AS (
      SELECT c.id, c.t, c.k, c.priority, c.run_at,
             row_number() OVER (PARTITION BY c.t, c.k ORDER BY c.priority DESC, c.run_at, c.id) AS in_key,
             c.lim - coalesce(b.n, 0) AS room
      FROM candidates c LEFT JOIN busy b ON b.t = c.t AND b.k = c.k
    ),
    allowed AS (
      SELECT id, priority, run_at,
             row_number() OVER (PARTITION BY t ORDER BY priority DESC, run_at, id) AS turn
      FROM ranked WHERE k IS NULL OR in_key <= room
    )"""
_FREE_KEY = """:keyed AND NOT EXISTS (
          SELECT 1 FROM busy WHERE busy.t = coalesce(sluice_jobs.tenant_id, '')
            AND busy.k = sluice_jobs.concurrency_key AND busy.n >= sluice_jobs.concurrency_limit)"""
_CANDIDATE = """
        SELECT id, coalesce(tenant_id, '') AS t, concurrency_key AS k, concurrency_limit AS lim,
               priority, run_at
        FROM sluice_jobs
        WHERE coalesce(tenant_id, '') = tenants.t AND {which} AND run_at <= {now} AND {extra}
        ORDER BY priority DESC, run_at, id
        LIMIT (SELECT {least}(:limit, (5 * :limit + 4 * count(*) - 1) / (4 * count(*)))
               FROM tenants WHERE t IS NOT NULL)"""


def _candidates_pg(which: str, extra: str) -> str:
    candidate = _CANDIDATE.format(which=which, now="now()", extra=extra, least="least")
    return f"""
      SELECT c.* FROM tenants, LATERAL ({candidate}
        FOR UPDATE SKIP LOCKED
      ) c
      WHERE tenants.t IS NOT NULL"""


# SKIP LOCKED lets overlapping drains take disjoint batches. ARRAY(subquery) runs the locking
# part exactly once (an IN or a join may rescan it and lock more rows than it claims); sorting
# the claimed rows on the server keeps the client from comparing UUIDs.
_CLAIM_PG = sa.text(
    f"""
    WITH RECURSIVE {_fair("least({a}, {b})")},
    candidates AS MATERIALIZED (
      {_candidates_pg(_PLAIN, "true")}
      UNION ALL
      {_candidates_pg(_KEYED, _FREE_KEY)}
    ),
    {_PICK},
    claimed AS (
      UPDATE sluice_jobs SET
        status = 'processing', attempts = attempts + 1, started_at = now(), finished_at = NULL,
        lease_expires_at = now() + make_interval(secs => least(timeout_seconds, :hold) + :grace),
        claim_token = :token
      WHERE id = ANY(ARRAY(SELECT id FROM allowed ORDER BY turn, priority DESC, run_at, id LIMIT :limit))
      RETURNING {_CLAIM_COLUMNS}, priority, run_at
    )
    SELECT {_CLAIM_COLUMNS} FROM claimed ORDER BY priority DESC, run_at, id
    """
).columns(payload=JSONDoc())

# Plain jobs of one tenant (the common case) keep the claim that needs no fair share: the same
# statement as before concurrency keys, which leaves keyed jobs to the full claim above.
_CLAIM_PG_PLAIN = sa.text(
    f"""
    WITH claimed AS (
      UPDATE sluice_jobs SET
        status = 'processing', attempts = attempts + 1, started_at = now(), finished_at = NULL,
        lease_expires_at = now() + make_interval(secs => least(timeout_seconds, :hold) + :grace),
        claim_token = :token
      WHERE id = ANY(ARRAY(
        SELECT id FROM sluice_jobs
        WHERE status = 'pending' AND run_at <= now() AND concurrency_key IS NULL
        ORDER BY priority DESC, run_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
      ))
      RETURNING {_CLAIM_COLUMNS}, priority, run_at
    )
    SELECT {_CLAIM_COLUMNS} FROM claimed ORDER BY priority DESC, run_at, id
    """
).columns(payload=JSONDoc())

# Which claim to run, in one round trip: are keyed jobs due (then claims of keyed jobs take turns
# on a transaction-level lock, released at commit, so two drains can't both see a free slot), and
# do pending jobs belong to more than one tenant (lowest and highest tenant differ)?
KEYED_LOCK = 0x51C3_0001
_PROBE = """
    SELECT
      CASE WHEN EXISTS (SELECT 1 FROM sluice_jobs
                        WHERE status = 'pending' AND concurrency_key IS NOT NULL AND run_at <= {now})
           THEN {lock} ELSE 0 END,
      (SELECT coalesce(tenant_id, '') FROM sluice_jobs WHERE status = 'pending' AND concurrency_key IS NULL
       ORDER BY coalesce(tenant_id, '') LIMIT 1)
      IS NOT (SELECT coalesce(tenant_id, '') FROM sluice_jobs
              WHERE status = 'pending' AND concurrency_key IS NULL
              ORDER BY coalesce(tenant_id, '') DESC LIMIT 1)
"""
_PROBE_PG = sa.text(
    _PROBE.format(now="now()", lock="(SELECT 1 FROM pg_advisory_xact_lock(:lock))").replace(
        "IS NOT (", "IS DISTINCT FROM ("
    )
)
# How many tenants one claim shares a batch between (the rest wait for a later batch).
MAX_TENANTS = 500


def claim_batch(
    conn: sa.Connection, limit: int, token: uuid.UUID, grace: int, hold: int = HOLD_SECONDS
) -> list[Claimed]:
    """Claim up to ``limit`` due jobs in one statement: tenants in turns, each one's jobs highest
    priority first, then FIFO, no concurrency key past its limit; each leased for
    min(timeout, ``hold``) + ``grace`` seconds."""
    params: dict[str, Any] = {"limit": limit, "grace": grace, "token": token, "hold": hold}
    postgres = conn.dialect.name == "postgresql"
    if not postgres:
        params["token"] = token.hex
    probe = _PROBE_PG if postgres else _PROBE_SQLITE
    keyed, tenants = conn.execute(probe, {"lock": KEYED_LOCK}).one()
    if not keyed and not tenants:
        stmt = _CLAIM_PG_PLAIN if postgres else _CLAIM_SQLITE_PLAIN
    else:
        params.update(keyed=bool(keyed), tenants=min(MAX_TENANTS, limit))
        stmt = _CLAIM_PG if postgres else _CLAIM_SQLITE
    rows: Sequence[Any] = conn.execute(stmt, params).all()
    if not postgres:
        # RETURNING has no order; run in claim order.
        rows = sorted(rows, key=lambda r: (-r.priority, r.run_at, r.id))
    return [
        Claimed(r[0], r[1], r[2], r[3], r[4], r[5], _backoff(r[6], r[7], r[8]), r[9], r[10]) for r in rows
    ]


_SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
_SQLITE_CLAIMED = f"""
    UPDATE sluice_jobs SET
      status = 'processing', attempts = attempts + 1, started_at = {_SQLITE_NOW}, finished_at = NULL,
      lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now',
                                  (min(timeout_seconds, :hold) + :grace) || ' seconds') || '000',
      claim_token = :token"""


def _candidates_sqlite(which: str, extra: str) -> str:
    candidate = _CANDIDATE.format(which=which, now=_SQLITE_NOW, extra=extra, least="min")
    return f"""
      SELECT j.id, coalesce(j.tenant_id, '') AS t, j.concurrency_key AS k, j.concurrency_limit AS lim,
             j.priority, j.run_at
      FROM tenants JOIN sluice_jobs j ON j.id IN (SELECT id FROM ({candidate}))
      WHERE tenants.t IS NOT NULL"""


# SQLite serialises writers (BEGIN IMMEDIATE), so the busy count is exact without a lock.
_CLAIM_SQLITE = sa.text(
    f"""
    WITH RECURSIVE {_fair("min(coalesce({a}, {b}), coalesce({b}, {a}))")},
    candidates AS (
      {_candidates_sqlite(_PLAIN, "1")}
      UNION ALL
      {_candidates_sqlite(_KEYED, _FREE_KEY)}
    ),
    {_PICK}
    {_SQLITE_CLAIMED}
    WHERE id IN (SELECT id FROM allowed ORDER BY turn, priority DESC, run_at, id LIMIT :limit)
    RETURNING {_CLAIM_COLUMNS}, priority, run_at
    """
).columns(id=sa.Uuid(), payload=JSONDoc(), tenant_id=sa.String(), correlation_id=sa.String())


_CLAIM_SQLITE_PLAIN = sa.text(
    f"""
    {_SQLITE_CLAIMED}
    WHERE id IN (SELECT id FROM sluice_jobs
                 WHERE status = 'pending' AND run_at <= {_SQLITE_NOW} AND concurrency_key IS NULL
                 ORDER BY priority DESC, run_at, id LIMIT :limit)
    RETURNING {_CLAIM_COLUMNS}, priority, run_at
    """
).columns(id=sa.Uuid(), payload=JSONDoc(), tenant_id=sa.String(), correlation_id=sa.String())
_PROBE_SQLITE = sa.text(_PROBE.format(now=_SQLITE_NOW, lock="1"))


def start_job(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID, grace: int) -> bool:
    """Mark a held job started: its lease becomes timeout + grace from now. False: the job is no
    longer this drain's (its lease ran out and another drain took it), so it must not run."""
    dialect = conn.dialect.name
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id == job_id, *_fence(token))
        .values(started_at=now(dialect), lease_expires_at=now_plus(dialect, jobs.c.timeout_seconds + grace))
    )
    return bool(conn.execute(stmt).rowcount)


def renew_leases(
    conn: sa.Connection,
    token: uuid.UUID,
    held: Sequence[uuid.UUID],
    *,
    running: uuid.UUID | None,
    grace: int,
    hold: int = HOLD_SECONDS,
) -> int:
    """Extend the leases a live drain still holds: the running job's to timeout + grace from now,
    the others' to min(timeout, hold) + grace from now (never shortened). Fenced; one statement."""
    if not held:
        return 0
    dialect = conn.dialect.name
    least, greatest = (
        (sa.func.least, sa.func.greatest) if dialect == "postgresql" else (sa.func.min, sa.func.max)
    )
    unstarted = now_plus(dialect, least(jobs.c.timeout_seconds, hold) + grace)
    renewed: sa.ColumnElement[Any] = greatest(jobs.c.lease_expires_at, unstarted)
    if running is not None:
        renewed = sa.case(
            (jobs.c.id == running, now_plus(dialect, jobs.c.timeout_seconds + grace)), else_=renewed
        )
    stmt = sa.update(jobs).where(jobs.c.id.in_(held), *_fence(token)).values(lease_expires_at=renewed)
    return conn.execute(stmt).rowcount


@functools.lru_cache(maxsize=256)
def _backoff(strategy: Strategy, delay: int, maximum: int) -> Backoff:
    return Backoff(strategy, delay, maximum)


_RECORD_PG = sa.text(
    """
    UPDATE sluice_jobs AS j SET
      status = v.status,
      result = CASE WHEN v.status = 'completed' THEN v.result ELSE j.result END,
      last_error = COALESCE(v.error, j.last_error),
      attempts = j.attempts - v.refund,
      run_at = CASE WHEN v.status = 'pending'
                    THEN now() + make_interval(secs => v.delay) ELSE j.run_at END,
      finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,
      lease_expires_at = NULL,
      claim_token = NULL
    FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:results AS jsonb[]),
                CAST(:errors AS text[]), CAST(:delays AS float8[]), CAST(:refunds AS int[]))
         AS v(id, status, result, error, delay, refund)
    WHERE j.id = v.id AND j.claim_token = :token AND j.status = 'processing'
    RETURNING j.id, v.status
    """
)
# One row back instead of one per job: counts, and the ids that became failed (for alerts).
_RECORD_PG_SUMMARY = sa.text(
    f"""
    WITH written AS ({_RECORD_PG.text})
    SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'pending'),
           coalesce(array_agg(id) FILTER (WHERE status = 'failed'), '{{}}')
    FROM written
    """
)


def record_outcomes(conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome]) -> Recorded:
    """Write outcomes in one fenced statement; returns what actually changed."""
    if not outcomes:
        return Recorded(0, 0, [])
    if conn.dialect.name == "postgresql":
        params = {
            "ids": [o.id for o in outcomes],
            "statuses": [o.status for o in outcomes],
            "results": [o.result for o in outcomes],
            "errors": [o.error for o in outcomes],
            "delays": [o.delay for o in outcomes],
            "refunds": [o.refund for o in outcomes],
            "token": token,
        }
        succeeded, retried, failed_ids = conn.execute(_RECORD_PG_SUMMARY, params).one()
        return Recorded(succeeded, retried, list(failed_ids))
    return _record_sqlite(conn, token, outcomes)


# The same single statement on SQLite, the batch passed as one JSON array (json_each).
_RECORD_SQLITE = sa.text(
    """
    UPDATE sluice_jobs SET
      status = v.status,
      result = CASE WHEN v.status = 'completed' THEN v.result ELSE sluice_jobs.result END,
      last_error = COALESCE(v.error, sluice_jobs.last_error),
      attempts = sluice_jobs.attempts - v.refund,
      run_at = CASE WHEN v.status = 'pending'
                    THEN strftime('%Y-%m-%d %H:%M:%f', 'now', v.delay || ' seconds') || '000'
                    ELSE sluice_jobs.run_at END,
      finished_at = CASE WHEN v.status = 'pending' THEN NULL
                         ELSE strftime('%Y-%m-%d %H:%M:%f', 'now') || '000' END,
      lease_expires_at = NULL,
      claim_token = NULL
    FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS status,
                 json_extract(value, '$[2]') AS result, json_extract(value, '$[3]') AS error,
                 json_extract(value, '$[4]') AS delay, json_extract(value, '$[5]') AS refund
          FROM json_each(:batch)) AS v
    WHERE sluice_jobs.id = v.id AND sluice_jobs.claim_token = :token
      AND sluice_jobs.status = 'processing'
    RETURNING sluice_jobs.id, sluice_jobs.status
    """
)


def _record_sqlite(conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome]) -> Recorded:
    # SQLite keeps UUIDs as 32 hex digits; delays are rounded so their text form is plain.
    batch = json.dumps(
        [
            [
                o.id.hex,
                o.status,
                o.result,
                o.error,
                round(o.delay, 3),
                o.refund,
            ]
            for o in outcomes
        ]
    )
    succeeded = retried = 0
    failed_ids: list[uuid.UUID] = []
    for job_id, status in conn.execute(_RECORD_SQLITE, {"batch": batch, "token": token.hex}):
        if status == "completed":
            succeeded += 1
        elif status == "pending":
            retried += 1
        else:
            failed_ids.append(uuid.UUID(job_id))
    return Recorded(succeeded, retried, failed_ids)


def release(conn: sa.Connection, token: uuid.UUID, ids: Sequence[uuid.UUID]) -> int:
    """Give back claimed jobs that were never started: pending again, the attempt uncounted."""
    if not ids:
        return 0
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id.in_(ids), *_fence(token))
        .values(
            status="pending",
            attempts=jobs.c.attempts - 1,
            started_at=None,
            lease_expires_at=None,
            claim_token=None,
        )
    )
    return conn.execute(stmt).rowcount


def set_progress(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID, percent: int) -> bool:
    stmt = sa.update(jobs).where(jobs.c.id == job_id, *_fence(token)).values(progress=percent)
    return bool(conn.execute(stmt).rowcount)


def set_checkpoint(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID, value: Any) -> bool:
    """Keep a handler's marker in ``result`` while it runs (a retry keeps it; completion replaces
    it), fenced like every write after a claim."""
    result_json(value)  # refuses (ValueError/TypeError) what the column can't hold, before writing
    stmt = sa.update(jobs).where(jobs.c.id == job_id, *_fence(token)).values(result=value)
    return bool(conn.execute(stmt).rowcount)


def get_checkpoint(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID) -> Any:
    """The marker an earlier attempt stored (None if none), read under this attempt's claim."""
    stmt = sa.select(jobs.c.result).where(jobs.c.id == job_id, jobs.c.claim_token == token)
    return conn.execute(stmt).scalar()


# \u0000 after an even run of backslashes (an odd run means the backslash itself was escaped).
def result_json(value: Any) -> str | None:
    """A handler's return value as JSON text; raises TypeError/ValueError if it isn't storable."""
    return None if value is None else storable_json(value)


# Durable steps (lib/steps.py): one key of the job's ``steps`` object per finished step.
_STEP_PG = sa.text(
    """
    UPDATE sluice_jobs
    SET steps = coalesce(steps, CAST('{}' AS jsonb))
                || jsonb_build_object(CAST(:name AS text), CAST(:entry AS jsonb))
    WHERE id = :id AND claim_token = :token AND status = 'processing'
    """
)
# Step names never hold a double quote (lib/steps.py), so the quoted path label is exact.
_STEP_SQLITE = sa.text(
    """
    UPDATE sluice_jobs
    SET steps = json_set(coalesce(steps, '{}'), '$."' || :name || '"', json(:entry))
    WHERE id = :id AND claim_token = :token AND status = 'processing'
    """
)


def write_step(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID, name: str, entry: str) -> bool:
    """Store one finished step (``entry``: JSON text) on the job, fenced like every write after a
    claim, in one statement. False: the job is no longer this claim's, nothing was written."""
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {"id": job_id, "token": token, "name": name, "entry": entry}
        return bool(conn.execute(_STEP_PG, params).rowcount)
    params = {"id": job_id.hex, "token": token.hex, "name": name, "entry": entry}
    return bool(conn.execute(_STEP_SQLITE, params).rowcount)


def read_steps(conn: sa.Connection, token: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The job's finished steps ({} if none), read under this claim; None: no longer ours."""
    stmt = sa.select(jobs.c.steps).where(jobs.c.id == job_id, *_fence(token))
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return dict(row[0] or {})
