"""Database fixtures: every integration test runs on a temp SQLite file and on a PostgreSQL
database this session creates (and drops). With CI=true a missing PostgreSQL fails the run."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Queue
from lib.db import make_engine

PG_ADMIN_URL = os.environ.get("SLUICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_HANDLERS = "tests.jobtypes"
TABLES = ("sluice_jobs", "sluice_drains", "sluice_schedules", "sluice_attempts", "sluice_idle_drains")


def _pg_reachable() -> str | None:
    try:
        engine = make_engine(PG_ADMIN_URL, "null")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except sa.exc.SQLAlchemyError as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail under CI=true)."""
    problem = _pg_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    return PG_ADMIN_URL


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


@pytest.fixture(scope="session")
def pg_database(pg_server: str) -> Iterator[str]:
    """One migrated database for the session; tests truncate it (see db_url)."""
    url = create_pg_database(pg_server)
    queue = Queue.from_url(url, jobs_db_pool="null")
    queue.migrate()
    queue.engine.dispose()
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (a copy is faster than migrating)."""
    path = tmp_path_factory.mktemp("template") / "sluice.db"
    queue = Queue.from_url(f"sqlite:///{path}")
    queue.migrate()
    # Closing the last connection checkpoints the WAL into the file, so a plain copy is whole.
    queue.engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL truncated."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "sluice.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    engine = make_engine(url, "null")
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)}"))
    engine.dispose()
    return url


def make_queue(url: str, **overrides: object) -> Queue:
    return Queue.from_url(url, jobs_handler_modules=TEST_HANDLERS, **overrides)


@pytest.fixture
def queue(db_url: str) -> Iterator[Queue]:
    q = make_queue(db_url)
    yield q
    q.engine.dispose()


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


@pytest.fixture
def aws_mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Amazon S3 and SES faked in process by moto (no network); cached boto3 clients are reset."""
    from moto import mock_aws

    from lib import aws

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.clear_clients()
    with mock_aws():
        yield
    aws.clear_clients()
