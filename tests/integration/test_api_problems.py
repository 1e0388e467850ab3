"""Configuration that cannot work is named, never a 500: health answers 503 "misconfigured" with
the problem, every protected route 503 not_configured with the same words; a database that is
not migrated says to run the migration. Drains are recorded with their true source, and drains
that found nothing are counted instead of recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import Queue
from lib.config import get_settings
from tests.support.api import ADMIN, api_settings, error_of
from tests.support.db import create_pg_database, drop_pg_database

PROTECTED = (
    ("GET", "/api/jobs/status"),
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs/process"),
    ("GET", "/api/schedules"),
    ("POST", "/api/jobs/retry"),
)


def assert_misconfigured(app: Flask, *words: str) -> str:
    client = app.test_client()
    health = client.get("/api/health")
    body = health.get_json()
    assert health.status_code == 503 and body["status"] == "misconfigured", body
    problem: str = body["problem"]
    for word in words:
        assert word in problem, (word, problem)
    for method, path in PROTECTED:
        response = client.open(path, method=method, headers=ADMIN, json={"type": "noop"})
        error = error_of(response, 503, "not_configured")
        assert error["message"] == problem, (path, error)
    return problem


def test_a_handler_module_that_does_not_import(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(sqlite_template.read_bytes())
    app = create_app(api_settings(f"sqlite:///{path}", jobs_handler_modules="tests.jobtypes,tests.no_such"))
    try:
        assert_misconfigured(app, "JOBS_HANDLER_MODULES", "'tests.no_such'", "ModuleNotFoundError")
    finally:
        app_state(app).dispose()


def test_an_unparsable_setting_keeps_the_app_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("JOBS_API_KEYS", "k1")
    monkeypatch.setenv("JOBS_DRAIN_BUDGET_MS", "25s")
    get_settings.cache_clear()
    try:
        app = create_app()
        problem = assert_misconfigured(app, "JOBS_DRAIN_BUDGET_MS")
        assert "25s" not in problem  # a refused value is never echoed (it might be a secret)
        assert not (tmp_path / "x.db").exists()
    finally:
        get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "empty.db"
        sa.create_engine(f"sqlite:///{path}").connect().close()
        yield f"sqlite:///{path}"
        return
    admin: str = request.getfixturevalue("pg_server")
    url = create_pg_database(admin, "sluice_unmigrated")
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


def test_a_database_that_is_not_migrated_says_so(unmigrated_url: str) -> None:
    app = create_app(api_settings(unmigrated_url))
    client = app.test_client()
    try:
        health = client.get("/api/health")
        assert health.status_code == 503
        assert health.get_json()["status"] == "misconfigured"
        assert "python -m lib migrate" in health.get_json()["problem"]
        for method, path in PROTECTED:
            response = client.open(path, method=method, headers=ADMIN, json={"type": "noop"})
            if path == "/api/jobs/retry":
                response = client.post(path, headers=ADMIN, json={"status": "failed"})
            error = error_of(response, 503, "not_configured")
            assert "run `python -m lib migrate`" in error["message"], (path, error)
    finally:
        app_state(app).dispose()


def test_an_unknown_database_and_a_missing_sqlite_file_are_named(pg_server: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "jobs.db"
    for url, words in (
        (pg_server.rsplit("/", 1)[0] + "/sluice_no_such_db", ('"sluice_no_such_db" does not exist',)),
        (f"sqlite:///{missing}", ("folder", "python -m lib migrate")),
    ):
        app = create_app(api_settings(url))
        try:
            client = app.test_client()
            body = client.get("/api/health").get_json()
            assert body["status"] == "misconfigured" and all(w in body["problem"] for w in words), body
            error = error_of(client.get("/api/jobs/status", headers=ADMIN), 503, "not_configured")
            assert all(w in error["message"] for w in words)
        finally:
            app_state(app).dispose()
    assert not missing.parent.exists()


def test_drains_are_recorded_with_their_true_source_and_idle_ones_counted(
    client: FlaskClient, queue: Queue
) -> None:
    for _ in range(3):  # cron ticks on an empty queue
        assert client.get("/api/jobs/process", headers={"Authorization": "Bearer cs"}).status_code == 200
    queue.enqueue("noop")
    cron_ua = {**ADMIN, "User-Agent": "vercel-cron/1.0"}
    assert client.get("/api/jobs/process", headers=cron_ua).get_json()["processed"] == 1
    client.post("/api/jobs/process", headers=ADMIN)  # an empty api drain
    with queue.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source, processed FROM sluice_drains")).all()
        idle = dict(conn.execute(sa.text("SELECT source, count FROM sluice_idle_drains")).all())
    assert [tuple(row) for row in rows] == [("cron", 1)]
    assert idle == {"cron": 3, "api": 1}
    last = client.get("/api/jobs/status", headers=ADMIN).get_json()["lastDrain"]
    assert (last["source"], last["processed"]) == ("cron", 1)
