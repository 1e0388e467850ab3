"""Peer and baseline cases: raw SQL limit, the seeds' naive algorithm, procrastinate, pgqueuer.

Every case gets a fresh, empty database DSN and N; it enqueues N no-op jobs, drains them all,
and returns the wall-clock times plus the number of jobs the database shows as completed.
"""

from __future__ import annotations

import asyncio
import uuid
from time import perf_counter
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.cases import Case, Timing
from bench.pgutil import analyze, scalar

BATCH = 1000  # enqueue batch size, the same for every system that has a batch API

# --------------------------------------------------------------------------- raw SQL limit

RAW_SCHEMA = """
CREATE TABLE jobs (
    id         bigserial PRIMARY KEY,
    type       text        NOT NULL,
    status     text        NOT NULL DEFAULT 'pending',
    payload    jsonb       NOT NULL,
    run_at     timestamptz NOT NULL DEFAULT now(),
    attempts   int         NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';
"""
RAW_CLAIM = """
UPDATE jobs SET status = 'processing', attempts = attempts + 1
WHERE id IN (SELECT id FROM jobs WHERE status = 'pending'
             ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 500)
RETURNING id, payload
"""


def bench_raw_sql(dsn: str, n: int) -> Timing:
    """Upper bound: what PostgreSQL itself allows with batched statements and no queue logic."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RAW_SCHEMA)
        t0 = perf_counter()
        for start in range(0, n, BATCH):
            k = min(BATCH, n - start)
            values = ", ".join(["(%s, %s)"] * k)
            params: list[object] = []
            for _ in range(k):
                params += ["noop", Jsonb({})]
            conn.execute(f"INSERT INTO jobs (type, payload) VALUES {values}", params)
        t1 = perf_counter()
        analyze(dsn)  # untimed, see pgutil.analyze
        t1b = perf_counter()
        while True:
            rows = conn.execute(RAW_CLAIM).fetchall()  # autocommit: one claim = one transaction
            if not rows:
                break
            ids = [r[0] for r in rows]  # "running" a no-op job is nothing
            conn.execute("UPDATE jobs SET status = 'done' WHERE id = ANY(%s)", (ids,))
        t2 = perf_counter()
    done = scalar(dsn, "SELECT count(*) FROM jobs WHERE status = 'done'")
    return Timing(t1 - t0, t2 - t1b, done)


# --------------------------------------------------------------------------- seeds' algorithm

# The JobQueue Prisma model of the seed documents (shared/seeds/001), in SQL.
SEEDS_SCHEMA = """
CREATE TABLE job_queue (
    id           text PRIMARY KEY,
    type         text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'pending',
    attempts     int         NOT NULL DEFAULT 0,
    max_attempts int         NOT NULL DEFAULT 3,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_queue_status_scheduled_at_idx ON job_queue (status, scheduled_at);
"""


def bench_seeds(dsn: str, n: int) -> Timing:
    """processNextJob() of the seeds, as a naive Prisma port would issue it: one job per call."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEEDS_SCHEMA)
        t0 = perf_counter()
        for _ in range(n):  # enqueueJob(): prisma.jobQueue.create, one INSERT per job
            conn.execute(
                "INSERT INTO job_queue (id, type, payload) VALUES (%s, %s, %s) RETURNING *",
                (uuid.uuid4().hex, "noop", Jsonb({})),
            ).fetchone()
        t1 = perf_counter()
        analyze(dsn)  # untimed, see pgutil.analyze
        t1b = perf_counter()
        while True:
            with conn.transaction():  # prisma.$transaction(async tx => findFirst, then update)
                row = conn.execute(
                    "SELECT * FROM job_queue WHERE status = 'pending' AND scheduled_at <= now()"
                    " ORDER BY scheduled_at ASC LIMIT 1"
                ).fetchone()
                if row is None:
                    break
                conn.execute(
                    "UPDATE job_queue SET status = 'processing', attempts = attempts + 1"
                    " WHERE id = %s RETURNING *",
                    (row[0],),
                ).fetchone()
            # executeJob(): no-op; then its own statement to mark it completed
            conn.execute(
                "UPDATE job_queue SET status = 'completed', processed_at = now() WHERE id = %s RETURNING *",
                (row[0],),
            ).fetchone()
        t2 = perf_counter()
    done = scalar(dsn, "SELECT count(*) FROM job_queue WHERE status = 'completed'")
    return Timing(t1 - t0, t2 - t1b, done)


# --------------------------------------------------------------------------- procrastinate

PROCRASTINATE_CONCURRENCY = 10


async def _procrastinate(dsn: str, n: int) -> Timing:
    import procrastinate

    # Pool at least as large as the worker's concurrency, else jobs queue up for connections.
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, min_size=2, max_size=PROCRASTINATE_CONCURRENCY + 2
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        t0 = perf_counter()
        for start in range(0, n, BATCH):
            # batch_defer_async: one INSERT … SELECT for the whole batch (procrastinate ≥ 2.15)
            await noop.batch_defer_async(*({} for _ in range(min(BATCH, n - start))))
        t1 = perf_counter()
        analyze(dsn)  # untimed, see pgutil.analyze
        t1b = perf_counter()
        await app.run_worker_async(
            concurrency=PROCRASTINATE_CONCURRENCY,
            wait=False,  # return once no job is left instead of waiting for more
            install_signal_handlers=False,
            listen_notify=False,  # nothing new arrives during the drain; skip the LISTEN side task
        )
        t2 = perf_counter()
    done = scalar(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    return Timing(t1 - t0, t2 - t1b, done)


def bench_procrastinate(dsn: str, n: int) -> Timing:
    return asyncio.run(_procrastinate(dsn, n))


# --------------------------------------------------------------------------- pgqueuer

PGQUEUER_BATCH = 100  # jobs per dequeue statement (pgqueuer's default is 10)


async def _pgqueuer(dsn: str, n: int, driver: str) -> Timing:
    from datetime import timedelta

    from pgqueuer import AsyncpgDriver, Job, PsycopgDriver, Queries, QueueManager
    from pgqueuer.ports.driver import Driver
    from pgqueuer.types import QueueExecutionMode

    # Both drivers wrap ONE connection, shared by queries and LISTEN. psycopg's needs autocommit,
    # and is ~10x slower to drain: its notifies() watcher holds the connection lock up to 1 s.
    conn: Any
    drv: Driver
    if driver == "asyncpg":
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(dsn)
        drv = AsyncpgDriver(conn)
    else:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        drv = PsycopgDriver(conn)
    try:
        queries = Queries(drv)
        await queries.install()
        t0 = perf_counter()
        for start in range(0, n, BATCH):
            k = min(BATCH, n - start)
            # list arguments = one batched INSERT … SELECT unnest(…)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        t1 = perf_counter()
        analyze(dsn)  # untimed, see pgutil.analyze
        t1b = perf_counter()

        qm = QueueManager(queries)

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        await qm.run(
            batch_size=PGQUEUER_BATCH,
            mode=QueueExecutionMode.drain,  # stop once the queue is empty and tasks are done
            dequeue_timeout=timedelta(seconds=1),
            log_aggregation_interval=timedelta(0),  # no background statistics folding
        )
        t2 = perf_counter()
    finally:
        await conn.close()
    # Finished jobs are deleted from `pgqueuer` and logged in `pgqueuer_log`.
    done = scalar(dsn, "SELECT count(DISTINCT job_id) FROM pgqueuer_log WHERE status = 'successful'")
    return Timing(t1 - t0, t2 - t1b, done)


def bench_pgqueuer(dsn: str, n: int) -> Timing:
    return asyncio.run(_pgqueuer(dsn, n, "asyncpg"))


def bench_pgqueuer_psycopg(dsn: str, n: int) -> Timing:
    return asyncio.run(_pgqueuer(dsn, n, "psycopg"))


CASES: list[Case] = [
    Case("raw SQL (limit)", bench_raw_sql),
    Case("seeds algorithm", bench_seeds),
    Case("procrastinate", bench_procrastinate),
    Case("pgqueuer", bench_pgqueuer),
    Case("pgqueuer (psycopg driver)", bench_pgqueuer_psycopg),
]
