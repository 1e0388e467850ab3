"""Who may do what: admin keys (rotation), tenant keys (scoped), the cron secret, nothing configured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import Queue
from tests.support.api import ADMIN, api_settings, enqueue, error_of
from tests.support.db import count

ACME = {"x-api-key": "ta"}
GLOBEX = {"Authorization": "Bearer tg"}
CRON = {"Authorization": "Bearer cs"}
SOME_ID = "01a208cb-a66b-70c3-9a33-9bf0964f8085"

# Every protected operation, with a body where it needs one.
PROTECTED: list[tuple[str, str, Any]] = [
    ("POST", "/api/jobs", {"type": "noop"}),
    ("POST", "/api/jobs/batch", {"jobs": [{"type": "noop"}]}),
    ("GET", "/api/jobs", None),
    ("GET", f"/api/jobs/{SOME_ID}", None),
    ("POST", f"/api/jobs/{SOME_ID}/cancel", None),
    ("POST", f"/api/jobs/{SOME_ID}/retry", None),
    ("GET", "/api/jobs/process", None),
    ("POST", "/api/jobs/process", None),
    ("GET", "/api/jobs/status", None),
]


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app(api_settings(db_url, job_processor_api_key="kp"))
    yield app
    app_state(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def call(client: FlaskClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "wrong"},
        {"x-api-key": ""},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic azE6"},
        {"Authorization": "k1"},  # a key without its scheme
        {"x-api-key": "k1 extra"},
        {"x-api-key": "K1"},
        {"x-api-key": "cs"},  # the cron secret is only accepted as Bearer
        {"x-api-key": "acme:ta"},
    ],
)
def test_missing_or_wrong_credentials_are_401(
    client: FlaskClient, queue: Queue, headers: dict[str, str]
) -> None:
    for method, path, body in PROTECTED:
        response = call(client, method, path, body, headers)
        error = error_of(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "k1" not in error["message"] and "wrong" not in error["message"]
    assert count(queue) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "k1"},
        {"x-api-key": "k2"},
        {"x-api-key": "kp"},
        {"Authorization": "Bearer k1"},
        {"Authorization": "bearer k2"},
        {"Authorization": "Bearer kp"},
        {"x-api-key": "wrong", "Authorization": "Bearer k2"},
    ],
)
def test_every_admin_key_works_in_either_header(
    client: FlaskClient, queue: Queue, headers: dict[str, str]
) -> None:
    job = client.post("/api/jobs", json={"type": "noop"}, headers=headers)
    assert job.status_code == 201
    assert client.get(f"/api/jobs/{job.get_json()['id']}", headers=headers).status_code == 200
    assert client.get("/api/jobs", headers=headers).status_code == 200
    assert client.get("/api/jobs/status", headers=headers).status_code == 200
    assert client.post("/api/jobs/process", headers=headers).get_json()["processed"] == 1
    assert client.get("/api/jobs/process", headers=headers).status_code == 200
    assert count(queue, "status = 'completed'") == 1


# -- the cron secret -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_cron_secret_drains_as_cron(client: FlaskClient, queue: Queue, method: str) -> None:
    enqueue(client, {"type": "noop"})
    response = client.open("/api/jobs/process?maxJobs=5&t=123", method=method, headers=CRON)
    assert response.status_code == 200 and response.get_json()["processed"] == 1
    assert client.get("/api/jobs/status", headers=ADMIN).get_json()["lastDrain"]["source"] == "cron"
    assert count(queue, "status = 'completed'") == 1


def test_cron_secret_is_refused_everywhere_else(client: FlaskClient, queue: Queue) -> None:
    for method, path, body in PROTECTED:
        if path == "/api/jobs/process":
            continue
        error_of(call(client, method, path, body, CRON), 403, "forbidden")
    # Only as Bearer: in x-api-key it is no credential at all, even on the process path.
    error_of(client.post("/api/jobs/process", headers={"x-api-key": "cs"}), 401, "unauthorized")
    assert count(queue) == 0


# -- tenant keys -----------------------------------------------------------------------------------


def test_tenant_key_enqueues_for_its_own_tenant_only(client: FlaskClient, queue: Queue) -> None:
    assert enqueue(client, {"type": "noop"}, ACME)["tenantId"] == "acme"
    assert enqueue(client, {"type": "noop", "tenantId": "acme"}, ACME)["tenantId"] == "acme"
    error_of(
        client.post("/api/jobs", json={"type": "noop", "tenantId": "globex"}, headers=ACME), 403, "forbidden"
    )
    batch = {"jobs": [{"type": "noop"}, {"type": "noop", "tenantId": "globex"}]}
    error_of(client.post("/api/jobs/batch", json=batch, headers=ACME), 403, "forbidden")
    made = client.post("/api/jobs/batch", json={"jobs": [{"type": "noop"}]}, headers=GLOBEX)
    assert made.status_code == 201 and made.get_json()["jobs"][0]["tenantId"] == "globex"
    assert count(queue, "tenant_id = 'acme'") == 2
    assert count(queue, "tenant_id = 'globex'") == 1
    assert count(queue) == 3


def test_tenant_key_cannot_see_or_touch_another_tenants_job(client: FlaskClient, queue: Queue) -> None:
    theirs = enqueue(client, {"type": "noop"}, GLOBEX)
    failed = enqueue(client, {"type": "test.fail", "maxAttempts": 1}, GLOBEX)
    queue.drain()
    for method, path in (
        ("GET", f"/api/jobs/{theirs['id']}"),
        ("POST", f"/api/jobs/{theirs['id']}/cancel"),
        ("POST", f"/api/jobs/{failed['id']}/retry"),
        ("GET", f"/api/jobs/{failed['id']}"),
    ):
        error_of(client.open(path, method=method, headers=ACME), 404, "not_found")
    # Untouched, and still reachable by their owner and by an admin.
    assert count(queue, "status = 'completed'") == 1 and count(queue, "status = 'failed'") == 1
    assert client.get(f"/api/jobs/{theirs['id']}", headers=GLOBEX).status_code == 200
    assert client.post(f"/api/jobs/{failed['id']}/retry", headers=GLOBEX).status_code == 200
    assert client.get(f"/api/jobs/{theirs['id']}", headers=ADMIN).status_code == 200


def test_tenant_key_lists_only_its_jobs(client: FlaskClient) -> None:
    mine = enqueue(client, {"type": "noop"}, ACME)
    enqueue(client, {"type": "noop"}, GLOBEX)
    enqueue(client, {"type": "noop"})
    for query in ("", "?tenantId=acme", "?tenantId="):
        page = client.get(f"/api/jobs{query}", headers=ACME).get_json()
        assert [j["id"] for j in page["jobs"]] == [mine["id"]]
    error_of(client.get("/api/jobs?tenantId=globex", headers=ACME), 403, "forbidden")
    assert len(client.get("/api/jobs", headers=ADMIN).get_json()["jobs"]) == 3


def test_tenant_status_counts_only_its_jobs(client: FlaskClient) -> None:
    enqueue(client, {"type": "noop"}, ACME)
    enqueue(client, {"type": "test.greet", "payload": {"name": "g"}}, GLOBEX)
    enqueue(client, {"type": "test.greet", "payload": {"name": "g"}}, GLOBEX)
    client.post("/api/jobs/process?maxJobs=1", headers=ADMIN)
    status = client.get("/api/jobs/status", headers=ACME).get_json()
    assert sum(status["counts"].values()) == 1
    assert status["byType"] == {"noop": {"completed": 1}} or status["byType"] == {"noop": {"pending": 1}}
    assert all(job["tenantId"] == "acme" for job in status["pending"])
    assert status["lastDrain"] is None
    assert client.get("/api/jobs/status", headers=ADMIN).get_json()["lastDrain"] is not None
    globex = client.get("/api/jobs/status", headers=GLOBEX).get_json()
    assert sum(globex["counts"].values()) == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_tenant_key_may_not_process(client: FlaskClient, queue: Queue, method: str) -> None:
    enqueue(client, {"type": "noop"}, ACME)
    error_of(client.open("/api/jobs/process", method=method, headers=ACME), 403, "forbidden")
    assert count(queue, "status = 'pending'") == 1


# -- nothing configured ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, ADMIN, CRON, {"x-api-key": ""}])
def test_no_keys_configured_is_503_on_every_protected_endpoint(db_url: str, headers: dict[str, str]) -> None:
    # A CRON_SECRET alone does not count: API.md asks for an admin or a tenant key.
    app = create_app(api_settings(db_url, jobs_api_keys="", jobs_tenant_keys=""))
    client = app.test_client()
    try:
        for method, path, body in PROTECTED:
            error_of(call(client, method, path, body, headers), 503, "not_configured")
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/openapi.json").status_code == 200
        error_of(client.get("/api/nope", headers=headers), 404, "not_found")
        error_of(client.delete("/api/jobs", headers=headers), 405, "method_not_allowed")
    finally:
        app_state(app).dispose()


def test_tenant_keys_alone_are_a_configuration(db_url: str) -> None:
    app = create_app(api_settings(db_url, jobs_api_keys=""))
    client = app.test_client()
    try:
        assert client.get("/api/jobs", headers=ACME).status_code == 200
        error_of(client.get("/api/jobs"), 401, "unauthorized")
        error_of(client.post("/api/jobs/process", headers=ACME), 403, "forbidden")
    finally:
        app_state(app).dispose()
