"""PostgreSQL faults seen through the API: the drain's connection terminated mid-batch, every
backend ended between requests (a restart or failover), nothing listening at all, and a batch
insert killed halfway. Each answers 503 `unavailable` (never 500), loses nothing, leaves no job
without a lease, and the app recovers by itself.

The tests run on a PostgreSQL database of their own: ending backends must not disturb others."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import JobSpec, Queue
from lib.db import normalize_url
from tests.e2e.appserver import free_port
from tests.jobtypes import terminate_backends
from tests.support.api import ADMIN, api_settings, enqueue, error_of
from tests.support.db import TABLES, count, create_pg_database, drop_pg_database, make_queue
from tests.support.polling import wait_for

# Every job is in one of these states: no job may be left `processing` without a lease.
ACCOUNTED = (
    "status IN ('pending', 'completed', 'failed', 'cancelled') OR "
    "(status = 'processing' AND lease_expires_at IS NOT NULL AND claim_token IS NOT NULL)"
)
JOB_ID = "01a208cb-a66b-70c3-9a33-9bf0964f8085"
SCHEDULE = {"cron": "0 2 * * *", "type": "noop"}

# One call per kind of route (reads, writes, drains, maintenance), with the statuses it answers
# when the database works.
CALLS: list[tuple[str, str, Any, tuple[int, ...]]] = [
    ("GET", "/api/health", None, (200,)),
    ("GET", "/api/jobs", None, (200,)),
    ("POST", "/api/jobs", {"type": "noop"}, (201,)),
    ("POST", "/api/jobs/batch", {"jobs": [{"type": "noop"}, {"type": "noop"}]}, (201,)),
    ("GET", f"/api/jobs/{JOB_ID}", None, (404,)),
    ("POST", f"/api/jobs/{JOB_ID}/cancel", None, (404,)),
    ("POST", f"/api/jobs/{JOB_ID}/retry", None, (404,)),
    ("GET", "/api/jobs/status", None, (200,)),
    ("POST", "/api/jobs/process", None, (200,)),
    ("GET", "/api/jobs/metrics", None, (200,)),
    ("GET", "/api/schedules", None, (200,)),
    ("PUT", "/api/schedules/nightly", SCHEDULE, (200,)),
    ("GET", "/api/schedules/nightly", None, (200, 404)),
    ("DELETE", "/api/schedules/nightly", None, (204, 404)),
    ("POST", "/api/jobs/cleanup", {}, (200,)),
    ("POST", "/api/tenants/acme/erase", None, (200,)),
]


@pytest.fixture(scope="module")
def fault_database(pg_server: str) -> Iterator[str]:
    url = create_pg_database(pg_server, "sluice_faults")
    queue = Queue.from_url(url, jobs_db_pool="null")
    queue.migrate()
    queue.engine.dispose()
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture
def pg_url(fault_database: str) -> str:
    engine = sa.create_engine(normalize_url(fault_database), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)}"))
    engine.dispose()
    return fault_database


def make_app(url: str, **overrides: Any) -> Flask:
    return create_app(api_settings(url, jobs_lease_grace_seconds=0, **overrides))


@pytest.fixture
def app(pg_url: str) -> Iterator[Flask]:
    app = make_app(pg_url)
    yield app
    app_state(app).dispose()


def call(client: FlaskClient, method: str, path: str, body: Any) -> Any:
    return client.open(path, method=method, json=body, headers=ADMIN)


def assert_unavailable(response: Any, path: str) -> None:
    """The documented 503: the health check's own body, else the error object."""
    if path == "/api/health":
        assert (response.status_code, response.get_json()) == (503, {"status": "unavailable"})
    else:
        error_of(response, 503, "unavailable")


# -- the drain's connection dies mid-batch -----------------------------------------------------------


def test_drain_connection_terminated_mid_batch(app: Flask) -> None:
    """test.pg_terminate ends the drain's own connection while the batch runs: the outcome flush
    is retried once on a fresh connection, so every outcome is recorded, the call answers 200 and
    no job runs twice."""
    client = app.test_client()
    queue = app_state(app).queue
    fast = {"timeoutSeconds": 1}
    ids = [enqueue(client, {"type": "test.greet", "payload": {"name": "a"}, "priority": 9, **fast})["id"]]
    ids.append(enqueue(client, {"type": "test.pg_terminate", "priority": 5, **fast})["id"])
    ids += [enqueue(client, {"type": "noop", **fast})["id"] for _ in range(3)]

    drained = client.post("/api/jobs/process?maxJobs=10", headers=ADMIN)

    assert drained.status_code == 200, drained.get_data(as_text=True)
    summary = drained.get_json()
    assert (summary["processed"], summary["succeeded"], summary["retried"], summary["failed"]) == (5, 5, 0, 0)
    assert count(queue, "status = 'completed' AND attempts = 1 AND claim_token IS NULL") == 5
    assert count(queue, ACCOUNTED) == 5
    killer = client.get(f"/api/jobs/{ids[1]}", headers=ADMIN).get_json()
    assert killer["result"]["attempt"] == 1 and killer["result"]["ended"] >= 1


# -- every backend ended between requests (what a restart looks like) ---------------------------------


@pytest.mark.parametrize(("method", "path", "body", "ok"), CALLS, ids=[f"{c[0]} {c[1]}" for c in CALLS])
def test_backends_terminated_between_requests(
    app: Flask, pg_url: str, method: str, path: str, body: Any, ok: tuple[int, ...]
) -> None:
    """The pool's connections all died while idle: pre-ping notices and reconnects, so even the
    first request after the "restart" succeeds; the one after it too."""
    client = app.test_client()
    assert call(client, method, path, body).status_code in ok  # the pool now holds a connection
    assert terminate_backends(pg_url) >= 1
    for _ in range(2):
        response = call(client, method, path, body)
        assert response.status_code in ok, response.get_data(as_text=True)
    assert count(app_state(app).queue, ACCOUNTED) == count(app_state(app).queue)


def test_terminated_while_a_request_holds_its_connection_is_503_then_recovers(
    app: Flask, pg_url: str
) -> None:
    """A connection ended while in use (no pre-ping can help) is never a 500: test.pg_terminate
    ends the drain's connection from inside, the drain writes its outcome again on a fresh one,
    and every later request gets a fresh connection too."""
    client = app.test_client()
    enqueue(client, {"type": "test.pg_terminate", "timeoutSeconds": 1})
    drained = client.post("/api/jobs/process", headers=ADMIN)
    assert drained.status_code == 200, drained.get_data(as_text=True)
    assert drained.get_json()["succeeded"] == 1
    for method, path, body, ok in CALLS:
        if path != "/api/jobs/process":
            assert call(client, method, path, body).status_code in ok, path


# -- nothing listening ---------------------------------------------------------------------------------


def test_unreachable_database_is_503_everywhere() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    app = make_app(url)
    client = app.test_client()
    try:
        for method, path, body, _ in CALLS:
            assert_unavailable(call(client, method, path, body), path)
        # Refusals that need no database still come first.
        error_of(client.post("/api/jobs", json={"type": "noop"}), 401, "unauthorized")
        error_of(client.post("/api/jobs", json={"type": "nope"}, headers=ADMIN), 422, "unknown_job_type")
    finally:
        app_state(app).dispose()


# -- a batch insert killed halfway ---------------------------------------------------------------------


def end_backend_waiting_on_a_lock(url: str) -> bool:
    """Ends the app's backend that waits on a lock, if there is one yet."""
    conninfo = sa.engine.make_url(normalize_url(url)).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'sluice' AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and bool(row[0])


def test_batch_insert_killed_halfway_writes_nothing(app: Flask, pg_url: str) -> None:
    """The batch's one INSERT has written its first 50 rows and waits on the 51st (its
    idempotency key is held by another, uncommitted transaction) when its backend is ended: the
    request is a 503 and not one row of the batch remains."""
    client = app.test_client()
    other = make_queue(pg_url, jobs_db_pool="null")
    batch = {"jobs": [*({"type": "noop"} for _ in range(50)), {"type": "noop", "idempotencyKey": "last"}]}
    answers: list[Any] = []
    with other.engine.connect() as holder:
        holder.begin()
        other.submit(JobSpec(type="noop", idempotency_key="last"), conn=holder)
        poster = threading.Thread(
            target=lambda: answers.append(client.post("/api/jobs/batch", json=batch, headers=ADMIN))
        )
        poster.start()
        wait_for(lambda: end_backend_waiting_on_a_lock(pg_url), 10, "the insert to wait on the key")
        poster.join(10)
        holder.rollback()
    other.engine.dispose()
    [response] = answers
    error_of(response, 503, "unavailable")
    queue = app_state(app).queue
    assert count(queue) == 0
    made = client.post("/api/jobs/batch", json=batch, headers=ADMIN)
    assert made.status_code == 201
    assert count(queue) == 51
