"""The test database: queues on it, rows counted straight from it, PostgreSQL databases of our own."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib import Queue
from lib.db import make_engine
from lib.schema import jobs
from lib.store.clock import now

PG_ADMIN_URL = os.environ.get("SLUICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_HANDLERS = "tests.jobtypes"
# Every table: the db_url fixture truncates them between tests (add a new table here).
TABLES = ("sluice_jobs", "sluice_drains", "sluice_schedules", "sluice_attempts", "sluice_idle_drains")


def create_pg_database(admin_url: str, prefix: str = "sluice_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = make_engine(admin_url, "null").execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = make_engine(admin_url, "null").execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def make_queue(url: str, **overrides: object) -> Queue:
    return Queue.from_url(url, jobs_handler_modules=TEST_HANDLERS, **overrides)


def drain_together(queues: list[Queue], timeout: float = 100, **drain_options: Any) -> None:
    """Start one drain per queue at the same instant (a barrier), in threads; re-raise any error."""
    barrier = threading.Barrier(len(queues))
    errors: list[BaseException] = []

    def drain(q: Queue) -> None:
        try:
            barrier.wait()
            q.drain(**drain_options)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(q,)) for q in queues]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    assert errors == []


def count(queue: Queue, where: str = "1=1", **params: object) -> int:
    """Rows of sluice_jobs matching a SQL condition, read straight from the database."""
    with queue.engine.connect() as conn:
        return int(
            conn.execute(sa.text(f"SELECT count(*) FROM sluice_jobs WHERE {where}"), params).scalar_one()
        )


def db_now(queue: Queue) -> datetime:
    with queue.engine.connect() as conn:
        value: datetime = conn.execute(sa.select(now(queue.dialect))).scalar_one()
    return value


def expired_leases(queue: Queue) -> int:
    expired = [jobs.c.status == "processing", jobs.c.lease_expires_at < now(queue.dialect)]
    with queue.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(*expired)).scalar_one())


def rows(url: str, sql: str) -> list[Any]:
    """The rows of one SQL statement on the database at ``url`` (a server under test owns the data)."""
    engine = make_engine(url, "null")
    with engine.connect() as conn:
        found = list(conn.execute(sa.text(sql)))
    engine.dispose()
    return found
