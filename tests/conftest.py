"""Database fixtures: every integration test runs on a temp SQLite file and on a PostgreSQL
database this session creates (and drops). With CI=true a missing PostgreSQL fails the run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lib import Queue
from lib.db import make_engine
from tests.support.db import (
    IN_CI,
    PG_ADMIN_URL,
    TABLES,
    create_pg_database,
    drop_pg_database,
    make_queue,
)


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


@pytest.fixture
def queue(db_url: str) -> Iterator[Queue]:
    q = make_queue(db_url)
    yield q
    q.engine.dispose()


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
