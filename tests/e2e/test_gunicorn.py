"""The production shape: ``gunicorn api.index:app`` with two workers on a fresh PostgreSQL database
(migrated with ``python -m lib migrate``), driven over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.appserver import call, clean_env, free_port, gunicorn_server
from tests.support.db import rows


@pytest.fixture
def gunicorn(pg_url: str) -> Iterator[str]:
    with gunicorn_server(clean_env(pg_url), free_port(), "-w", "2") as base:
        yield base


@pytest.mark.slow
@pytest.mark.pg
def test_gunicorn_two_workers_on_postgresql(gunicorn: str, pg_url: str) -> None:
    base = gunicorn
    assert call(base, "GET", "/api/health", key=None) == (200, {"status": "ok"})
    status, denied = call(base, "GET", "/api/jobs/status", key=None)
    assert status == 401 and denied["error"]["code"] == "unauthorized"

    status, greet = call(base, "POST", "/api/jobs", {"type": "test.greet", "payload": {"name": "pg"}})
    assert status == 201
    status, batch = call(
        base,
        "POST",
        "/api/jobs/batch",
        {"jobs": [{"type": "noop"}, {"type": "noop"}, {"type": "test.permanent"}]},
    )
    assert status == 201 and len(batch["jobs"]) == 3

    status, summary = call(base, "POST", "/api/jobs/process?maxJobs=10")
    assert status == 200
    assert summary == summary | {
        "processed": 4,
        "succeeded": 3,
        "failed": 1,
        "remaining": 0,
        "stoppedBy": "empty",
    }
    status, job = call(base, "GET", f"/api/jobs/{greet['id']}")
    assert (status, job["status"], job["result"]["greeting"]) == (200, "completed", "hello pg")
    status, overview = call(base, "GET", "/api/jobs/status")
    assert overview["counts"] == {"pending": 0, "processing": 0, "completed": 3, "failed": 1, "cancelled": 0}
    assert overview["lastDrain"]["source"] == "api"

    # Two workers draining at once split the work and never run an attempt twice.
    status, _ = call(base, "POST", "/api/jobs/batch", {"jobs": [{"type": "noop"}] * 40})
    assert status == 201
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: call(base, "POST", "/api/jobs/process?maxJobs=15"), range(4)))
    assert all(code == 200 for code, _ in results)
    assert sum(s["processed"] for _, s in results) == 40
    assert rows(pg_url, "SELECT count(*) FROM sluice_jobs WHERE status = 'completed'")[0][0] == 43
    assert rows(pg_url, "SELECT max(attempts) FROM sluice_jobs")[0][0] == 1
    # Every drain is accounted for: a history row, or (one that found nothing) an idle count.
    drains = (
        "SELECT (SELECT count(*) FROM sluice_drains)"
        " + (SELECT coalesce(sum(count), 0) FROM sluice_idle_drains)"
    )
    assert rows(pg_url, drains)[0][0] == 5

    status, text = call(base, "GET", "/api/jobs/metrics")
    assert status == 200 and 'sluice_jobs{status="completed"} 43.0' in text
    status, page = call(base, "GET", "/", key=None)
    assert status == 200 and "<title>Sluice dashboard</title>" in page
