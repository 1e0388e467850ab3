"""The schedule, cleanup and tenant-erase routes through the Flask test client, on both databases."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib.schema import jobs
from lib.store.clock import now_plus
from tests.support.api import api_settings
from tests.support.db import count

ADMIN = {"x-api-key": "k1"}
TENANT = {"x-api-key": "ta"}
SCHEDULE_KEYS = {
    "name", "cron", "timezone", "type", "payload", "enabled", "catchUp", "priority", "maxAttempts",
    "timeoutSeconds", "backoff", "tenantId", "nextRunAt", "lastRunAt", "lastJobId",
}  # fmt: skip




def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()["error"]
    return body


def test_admin_only(client: FlaskClient) -> None:
    calls = [
        ("get", "/api/schedules", None),
        ("get", "/api/schedules/x", None),
        ("put", "/api/schedules/x", {"cron": "* * * * *", "type": "noop"}),
        ("delete", "/api/schedules/x", None),
        ("post", "/api/jobs/cleanup", {}),
        ("post", "/api/tenants/acme/erase", None),
    ]
    for method, path, body in calls:
        anonymous = getattr(client, method)(path, json=body)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
        tenant = getattr(client, method)(path, json=body, headers=TENANT)
        assert tenant.status_code == 403, path
        cron = getattr(client, method)(path, json=body, headers={"Authorization": "Bearer cs"})
        assert cron.status_code == 403, path
    assert count(app_state(client.application).queue) == 0


def test_schedule_lifecycle(client: FlaskClient) -> None:
    body = {"cron": "*/5 * * * *", "timezone": "Europe/Paris", "type": "test.greet", "payload": {"name": "a"}}
    put = client.put("/api/schedules/greet.every-5", json=body, headers=ADMIN)
    assert put.status_code == 200, put.get_json()
    made = put.get_json()
    assert set(made) == SCHEDULE_KEYS
    assert made["name"] == "greet.every-5" and made["payload"] == {"name": "a", "times": 1}
    assert made["nextRunAt"].endswith("Z") and made["lastRunAt"] is None and made["lastJobId"] is None
    assert put.headers["Cache-Control"] == "no-store"
    client.put(
        "/api/schedules/a", json={"cron": "0 0 * * *", "type": "noop", "enabled": False}, headers=ADMIN
    )
    listed = client.get("/api/schedules", headers=ADMIN).get_json()
    assert [s["name"] for s in listed["schedules"]] == ["a", "greet.every-5"]
    assert listed["schedules"][0]["nextRunAt"] is None
    assert client.get("/api/schedules/greet.every-5/", headers=ADMIN).get_json() == made
    replaced = client.put(
        "/api/schedules/greet.every-5", json={**body, "catchUp": True, "priority": 7}, headers=ADMIN
    ).get_json()
    assert (replaced["catchUp"], replaced["priority"]) == (True, 7)
    deleted = client.delete("/api/schedules/greet.every-5", headers=ADMIN)
    assert deleted.status_code == 204 and deleted.data == b""
    missing = client.get("/api/schedules/greet.every-5", headers=ADMIN)
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    assert client.delete("/api/schedules/greet.every-5", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("body", "code", "loc"),
    [
        ({"cron": "61 * * * *", "type": "noop"}, "validation_error", "cron"),
        ({"cron": "@daily", "type": "noop"}, "validation_error", "cron"),
        ({"cron": "0 0 * * *", "type": "noop", "timezone": "Europe/Nowhere"}, "validation_error", "timezone"),
        ({"cron": "0 0 * * *", "type": "noop", "sneaky": 1}, "validation_error", "sneaky"),
        ({"cron": "0 0 * * *", "type": "noop", "catchUp": "yes"}, "validation_error", "catchUp"),
        ({"cron": "0 0 * * *", "type": "noop", "catch_up": True}, "validation_error", "catch_up"),
        ({"cron": "0 0 * * *", "type": "noop", "priority": "5"}, "validation_error", "priority"),
        ({"type": "noop"}, "validation_error", "cron"),
        ({"cron": "0 0 * * *", "type": "no.such.type"}, "unknown_job_type", "type"),
        (
            {"cron": "0 0 * * *", "type": "test.greet", "payload": {"name": 1}},
            "validation_error",
            "payload.name",
        ),
        ({"cron": "0 0 * * *\u0000", "type": "noop"}, "validation_error", "cron"),
    ],
)
def test_put_schedule_refusals(client: FlaskClient, body: dict[str, Any], code: str, loc: str) -> None:
    response = client.put("/api/schedules/s", json=body, headers=ADMIN)
    assert response.status_code == 422, response.get_json()
    assert error(response)["code"] == code
    assert error(response)["details"][0]["loc"] == loc
    assert client.get("/api/schedules", headers=ADMIN).get_json() == {"schedules": []}


def test_put_schedule_bad_name_and_bodies(client: FlaskClient) -> None:
    good = {"cron": "0 0 * * *", "type": "noop"}
    bad_name = client.put("/api/schedules/" + "x" * 101, json=good, headers=ADMIN)
    assert bad_name.status_code == 422 and error(bad_name)["details"][0]["loc"] == "name"
    assert client.put("/api/schedules/a b", json=good, headers=ADMIN).status_code == 422
    malformed = client.put(
        "/api/schedules/s", data="{", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and error(malformed)["code"] == "bad_request"
    assert client.put("/api/schedules/s", json=[1], headers=ADMIN).status_code == 400
    assert client.post("/api/schedules/s", json=good, headers=ADMIN).status_code == 405
    assert client.post("/api/schedules", json=good, headers=ADMIN).status_code == 405


def test_cleanup_route(client: FlaskClient) -> None:
    queue = app_state(client.application).queue
    for age in (10, 2 * 86_400):
        job = queue.enqueue("noop", {})
        with queue.engine.begin() as conn:
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == uuid.UUID(job.id))
                .values(status="completed", finished_at=now_plus(queue.dialect, -age))
            )
    queue.enqueue("noop", {})  # pending: never touched
    dry = client.post(
        "/api/jobs/cleanup", json={"completedOlderThanSeconds": 60, "dryRun": True}, headers=ADMIN
    )
    assert dry.status_code == 200
    assert dry.get_json()["deleted"] == {"completed": 2 - 1, "failed": 0, "cancelled": 0}
    assert count(queue) == 3
    # No body at all (a cron service's POST): the configured defaults.
    plain = client.post("/api/jobs/cleanup", headers=ADMIN)
    assert plain.status_code == 200
    result = plain.get_json()
    assert set(result) == {"deleted", "archived", "durationMs"}
    assert result["deleted"] == {"completed": 1, "failed": 0, "cancelled": 0} and result["archived"] == 0
    assert count(queue) == 2 and count(queue, "status = 'pending'") == 1
    for bad in (
        {"nope": 1},
        {"dryRun": "true"},
        {"completedOlderThanSeconds": -1},
        {"failedOlderThanSeconds": 3_153_600_001},
        {"cancelledOlderThanSeconds": 1.5},
    ):
        response = client.post("/api/jobs/cleanup", json=bad, headers=ADMIN)
        assert response.status_code == 422, bad
        assert error(response)["code"] == "validation_error"
    assert client.get("/api/jobs/cleanup", headers=ADMIN).status_code == 405
    assert client.post("/api/jobs/cleanup/", json={}, headers=ADMIN).status_code == 200


def test_erase_route(client: FlaskClient) -> None:
    queue = app_state(client.application).queue
    tenant_job = client.post("/api/jobs", json={"type": "noop"}, headers=TENANT).get_json()
    client.post("/api/jobs", json={"type": "noop"}, headers=ADMIN)
    client.put(
        "/api/schedules/acme-nightly",
        json={"cron": "0 2 * * *", "type": "noop", "tenantId": "acme"},
        headers=ADMIN,
    )
    erased = client.post("/api/tenants/acme/erase", headers=ADMIN)
    assert erased.status_code == 200
    assert erased.get_json() == {"deleted": 1, "schedules": 1, "processing": 0}
    assert client.get(f"/api/jobs/{tenant_job['id']}", headers=ADMIN).status_code == 404
    assert count(queue) == 1
    unknown = client.post("/api/tenants/nobody/erase/", headers=ADMIN)
    assert unknown.get_json() == {"deleted": 0, "schedules": 0, "processing": 0}
    too_long = client.post("/api/tenants/" + "t" * 256 + "/erase", headers=ADMIN)
    assert too_long.status_code == 422
    assert client.get("/api/tenants/acme/erase", headers=ADMIN).status_code == 405


def test_tenant_quota_is_429_with_retry_after(db_url: str) -> None:
    app = create_app(api_settings(db_url, jobs_tenant_enqueue_limit="2/hour"))
    try:
        client = app.test_client()
        for _ in range(2):
            assert client.post("/api/jobs", json={"type": "noop"}, headers=TENANT).status_code == 201
        refused = client.post("/api/jobs", json={"type": "noop"}, headers=TENANT)
        assert refused.status_code == 429
        assert error(refused)["code"] == "rate_limited"
        assert 3590 <= int(refused.headers["Retry-After"]) <= 3600
        batch = client.post("/api/jobs/batch", json={"jobs": [{"type": "noop"}]}, headers=TENANT)
        assert batch.status_code == 429
        assert client.post("/api/jobs", json={"type": "noop"}, headers=ADMIN).status_code == 201
        assert count(app_state(app).queue, "tenant_id = 'acme'") == 2
    finally:
        app_state(app).dispose()


def test_openapi_documents_the_routes(client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    paths = doc["paths"]
    assert set(paths["/api/schedules/{name}"]) == {"get", "put", "delete"}
    assert "get" in paths["/api/schedules"] and "post" in paths["/api/jobs/cleanup"]
    assert "post" in paths["/api/tenants/{tenantId}/erase"]
    assert "ScheduleSpec" in doc["components"]["schemas"]
