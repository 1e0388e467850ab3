"""Every endpoint of API.md through the Flask test client, on SQLite and PostgreSQL: status codes,
exact JSON bodies, trailing slashes, no redirects, Cache-Control, and the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import Queue
from tests.support.api import ADMIN, JOB_KEYS, api_settings, enqueue, error_of
from tests.support.db import count

SUMMARY_KEYS = ["processed", "succeeded", "retried", "failed", "durationMs", "remaining", "stoppedBy"]
STATUS_KEYS = ["counts", "ready", "scheduled", "oldestReadyAgeSeconds", "byType", "lastDrain", "pending"]
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# -- enqueue ---------------------------------------------------------------------------------------


def test_enqueue_answers_201_with_the_exact_job_object(client: FlaskClient, queue: Queue) -> None:
    response = client.post(
        "/api/jobs", json={"type": "test.greet", "payload": {"name": "ada"}}, headers=ADMIN
    )
    assert response.status_code == 201
    job = response.get_json()
    assert list(job) == JOB_KEYS
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert {k: v for k, v in job.items() if k not in ("id", "runAt", "createdAt", "correlationId")} == {
        "type": "test.greet",
        "payload": {"name": "ada", "times": 1},
        "status": "pending",
        "priority": 0,
        "attempts": 0,
        "maxAttempts": 2,
        "timeoutSeconds": 30,
        "startedAt": None,
        "finishedAt": None,
        "lastError": None,
        "result": None,
        "progress": None,
        "tenantId": None,
        "idempotencyKey": None,
        "step": None,
        "concurrencyKey": None,
        "concurrencyLimit": None,
        "debounceKey": None,
        "after": None,
        "callbackUrl": None,
    }
    assert UTC_TIME.match(job["runAt"]) and UTC_TIME.match(job["createdAt"])
    assert isinstance(job["correlationId"], str) and job["correlationId"]
    assert queue.get(job["id"]).to_wire() == job
    assert count(queue, "type = 'test.greet' AND status = 'pending' AND attempts = 0") == 1
    assert count(queue) == 1


def test_enqueue_with_every_option(client: FlaskClient, queue: Queue) -> None:
    job = enqueue(
        client,
        {
            "type": "test.fail",
            "payload": {"k": [1, "two", None]},
            "runAt": "2030-01-02T03:04:05+02:00",
            "priority": -7,
            "maxAttempts": 9,
            "timeoutSeconds": 900,
            "backoff": {"strategy": "linear", "delaySeconds": 5, "maxDelaySeconds": 50},
            "idempotencyKey": "key-1",
            "tenantId": "acme",
            "correlationId": "corr-1",
        },
    )
    assert job["runAt"] == "2030-01-02T01:04:05Z"
    assert (job["priority"], job["maxAttempts"], job["timeoutSeconds"]) == (-7, 9, 900)
    assert (job["tenantId"], job["correlationId"], job["idempotencyKey"]) == ("acme", "corr-1", "key-1")
    assert job["payload"] == {"k": [1, "two", None]}
    assert count(queue, "backoff_strategy = 'linear' AND backoff_delay = 5 AND backoff_max = 50") == 1


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59Z"),
        ("2030-06-01T12:00:00.250-07:30", "2030-06-01T19:30:00.250000Z"),
    ],
)
def test_run_at_limits_and_offsets(client: FlaskClient, given: str, stored: str) -> None:
    job = enqueue(client, {"type": "noop", "runAt": given})
    assert job["runAt"] == stored
    assert client.get(f"/api/jobs/{job['id']}", headers=ADMIN).get_json()["runAt"] == stored


def test_delay_seconds_schedules_the_job(client: FlaskClient, queue: Queue) -> None:
    enqueue(client, {"type": "noop", "delaySeconds": 3600})
    status = client.get("/api/jobs/status", headers=ADMIN).get_json()
    assert (status["ready"], status["scheduled"], status["pending"]) == (0, 1, [])


def test_same_idempotency_key_answers_200_with_the_existing_job(client: FlaskClient, queue: Queue) -> None:
    first = enqueue(client, {"type": "noop", "idempotencyKey": "once"})
    again = client.post(
        "/api/jobs",
        json={"type": "test.greet", "payload": {"name": "x"}, "idempotencyKey": "once"},
        headers=ADMIN,
    )
    assert again.status_code == 200
    assert again.get_json() == first
    assert "Location" not in again.headers
    # Keys are per tenant: the same key for another tenant is another job.
    other = client.post(
        "/api/jobs", json={"type": "noop", "idempotencyKey": "once"}, headers={"x-api-key": "ta"}
    )
    assert other.status_code == 201 and other.get_json()["id"] != first["id"]
    assert count(queue) == 2


def test_payload_nested_32_levels_is_accepted(client: FlaskClient, queue: Queue) -> None:
    payload: dict[str, Any] = {}
    for _ in range(31):
        payload = {"a": payload}
    job = enqueue(client, {"type": "noop", "payload": payload})
    assert job["payload"] == payload
    assert count(queue) == 1


# -- batch -----------------------------------------------------------------------------------------


def test_batch_answers_201_with_every_job_in_order(client: FlaskClient, queue: Queue) -> None:
    response = client.post(
        "/api/jobs/batch",
        json={"jobs": [{"type": "test.greet", "payload": {"name": "a"}}, {"type": "noop", "priority": 5}]},
        headers=ADMIN,
    )
    assert response.status_code == 201
    body = response.get_json()
    assert list(body) == ["jobs"]
    assert [(j["type"], j["priority"]) for j in body["jobs"]] == [("test.greet", 0), ("noop", 5)]
    assert all(list(job) == JOB_KEYS for job in body["jobs"])
    assert count(queue) == 2


def test_batch_reusing_a_stored_key_returns_the_existing_job(client: FlaskClient, queue: Queue) -> None:
    first = enqueue(client, {"type": "noop", "idempotencyKey": "k"})
    response = client.post(
        "/api/jobs/batch",
        json={"jobs": [{"type": "noop", "idempotencyKey": "k"}, {"type": "noop"}]},
        headers=ADMIN,
    )
    assert response.status_code == 201
    jobs = response.get_json()["jobs"]
    assert jobs[0]["id"] == first["id"] and jobs[1]["id"] != first["id"]
    assert count(queue) == 2


# -- read ------------------------------------------------------------------------------------------


def test_get_job_and_not_found(client: FlaskClient) -> None:
    job = enqueue(client, {"type": "noop"})
    for path in (f"/api/jobs/{job['id']}", f"/api/jobs/{job['id']}/"):
        response = client.get(path, headers=ADMIN)
        assert response.status_code == 200 and response.get_json() == job
    error_of(client.get("/api/jobs/01a208cb-a66b-70c3-9a33-9bf0964f8085", headers=ADMIN), 404, "not_found")
    for malformed in ("nope", "1", "%00", "01a208cb-a66b-70c3-9a33-9bf0964f808"):
        error_of(client.get(f"/api/jobs/{malformed}", headers=ADMIN), 404, "not_found")


def test_list_is_newest_first_and_paginates(client: FlaskClient) -> None:
    ids = [enqueue(client, {"type": "noop", "priority": i})["id"] for i in range(5)]
    response = client.get("/api/jobs?limit=2&_=cachebuster", headers=ADMIN)
    assert response.status_code == 200
    page = response.get_json()
    assert list(page) == ["jobs", "nextCursor"]
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["jobs"]]
    while page["nextCursor"]:
        page = client.get(f"/api/jobs/?limit=2&cursor={page['nextCursor']}", headers=ADMIN).get_json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == ids[::-1]
    everything = client.get("/api/jobs", headers=ADMIN).get_json()
    assert len(everything["jobs"]) == 5 and everything["nextCursor"] is None


def test_list_filters(client: FlaskClient) -> None:
    a = enqueue(client, {"type": "noop", "tenantId": "acme"})
    b = enqueue(client, {"type": "test.greet", "payload": {"name": "b"}})
    client.post(f"/api/jobs/{b['id']}/cancel", headers=ADMIN)

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/jobs?{query}", headers=ADMIN)
        assert response.status_code == 200
        return [j["id"] for j in response.get_json()["jobs"]]

    assert ids("status=pending") == [a["id"]]
    assert ids("status=cancelled") == [b["id"]]
    assert ids("type=test.greet") == [b["id"]]
    assert ids("tenantId=acme") == [a["id"]]
    assert ids("tenantId=globex") == []
    assert ids("status=&type=&tenantId=&cursor=") == [b["id"], a["id"]]  # empty values count as absent


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=abc", "limit=-1", "limit=1.5", "status=done", "cursor=xyz", "type=a%00b"],
)
def test_list_refuses_bad_query_parameters(client: FlaskClient, query: str) -> None:
    name = query.split("=", maxsplit=1)[0]
    error = error_of(client.get(f"/api/jobs?{query}", headers=ADMIN), 422, "validation_error")
    assert error["details"][0]["loc"] == name


# -- cancel and retry ------------------------------------------------------------------------------


def test_cancel_pending_then_conflict(client: FlaskClient, queue: Queue) -> None:
    job = enqueue(client, {"type": "noop"})
    response = client.post(f"/api/jobs/{job['id']}/cancel", headers=ADMIN)
    assert response.status_code == 200
    cancelled = response.get_json()
    assert list(cancelled) == JOB_KEYS
    assert cancelled["status"] == "cancelled" and UTC_TIME.match(cancelled["finishedAt"])
    error = error_of(client.post(f"/api/jobs/{job['id']}/cancel/", headers=ADMIN), 409, "conflict")
    assert error["details"] == {"status": "cancelled"}
    error_of(client.post("/api/jobs/nope/cancel", headers=ADMIN), 404, "not_found")
    assert count(queue, "status = 'cancelled'") == 1


def test_cancel_of_a_completed_job_is_a_conflict(client: FlaskClient, queue: Queue) -> None:
    job = enqueue(client, {"type": "noop"})
    queue.drain()
    error = error_of(client.post(f"/api/jobs/{job['id']}/cancel", headers=ADMIN), 409, "conflict")
    assert error["details"] == {"status": "completed"}
    assert count(queue, "status = 'completed'") == 1


def test_retry_failed_job_resets_it(client: FlaskClient, queue: Queue) -> None:
    job = enqueue(client, {"type": "test.fail", "maxAttempts": 1})
    queue.drain()
    response = client.post(f"/api/jobs/{job['id']}/retry", headers=ADMIN)
    assert response.status_code == 200
    retried = response.get_json()
    assert (retried["status"], retried["attempts"], retried["finishedAt"], retried["startedAt"]) == (
        "pending",
        0,
        None,
        None,
    )
    assert retried["lastError"] == "RuntimeError: boom"
    error = error_of(client.post(f"/api/jobs/{job['id']}/retry", headers=ADMIN), 409, "conflict")
    assert error["details"] == {"status": "pending"}
    error_of(
        client.post("/api/jobs/01a208cb-a66b-70c3-9a33-9bf0964f8085/retry", headers=ADMIN), 404, "not_found"
    )
    assert count(queue, "status = 'pending' AND attempts = 0") == 1


def test_retry_cancelled_job(client: FlaskClient) -> None:
    job = enqueue(client, {"type": "noop"})
    client.post(f"/api/jobs/{job['id']}/cancel", headers=ADMIN)
    response = client.post(f"/api/jobs/{job['id']}/retry", headers=ADMIN)
    assert response.status_code == 200 and response.get_json()["status"] == "pending"


# -- process and status ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_process_drains_and_returns_the_summary(client: FlaskClient, queue: Queue, method: str) -> None:
    for name in ("a", "b", "c"):
        enqueue(client, {"type": "test.greet", "payload": {"name": name}})
    response = client.open("/api/jobs/process?maxJobs=2&budgetMs=20000", method=method, headers=ADMIN)
    assert response.status_code == 200
    summary = response.get_json()
    assert list(summary) == SUMMARY_KEYS
    assert {k: v for k, v in summary.items() if k != "durationMs"} == {
        "processed": 2,
        "succeeded": 2,
        "retried": 0,
        "failed": 0,
        "remaining": 1,
        "stoppedBy": "maxJobs",
    }
    assert isinstance(summary["durationMs"], int)
    rest = client.open("/api/jobs/process/", method=method, headers=ADMIN).get_json()
    assert (rest["processed"], rest["remaining"], rest["stoppedBy"]) == (1, 0, "empty")
    assert count(queue, "status = 'completed'") == 3
    last = client.get("/api/jobs/status", headers=ADMIN).get_json()["lastDrain"]
    assert last["source"] == "api" and last["processed"] == 1 and last["stoppedBy"] == "empty"


def test_process_counts_failures(client: FlaskClient) -> None:
    enqueue(client, {"type": "test.permanent"})
    enqueue(client, {"type": "test.fail", "maxAttempts": 2})
    summary = client.post("/api/jobs/process", headers=ADMIN).get_json()
    assert (summary["processed"], summary["failed"], summary["retried"]) == (2, 1, 1)


@pytest.mark.parametrize(
    "query",
    [
        "maxJobs=abc",
        "maxJobs=0",
        "maxJobs=10001",
        "maxJobs=+5",
        "maxJobs=1e3",
        "budgetMs=99",
        "budgetMs=800001",
    ],
)
def test_process_refuses_bad_parameters(client: FlaskClient, queue: Queue, query: str) -> None:
    enqueue(client, {"type": "noop"})
    error = error_of(client.post(f"/api/jobs/process?{query}", headers=ADMIN), 422, "validation_error")
    assert error["details"][0]["loc"] == query.split("=", maxsplit=1)[0]
    assert count(queue, "status = 'pending'") == 1
    with queue.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sluice_drains")).scalar_one() == 0


def test_status_overview(client: FlaskClient, queue: Queue) -> None:
    empty = client.get("/api/jobs/status", headers=ADMIN)
    assert empty.status_code == 200
    assert empty.get_json() == {
        "counts": {"pending": 0, "processing": 0, "completed": 0, "failed": 0, "cancelled": 0},
        "ready": 0,
        "scheduled": 0,
        "oldestReadyAgeSeconds": None,
        "byType": {},
        "lastDrain": None,
        "pending": [],
    }
    done = enqueue(client, {"type": "noop"})
    client.post("/api/jobs/process", headers=ADMIN)
    ready = enqueue(client, {"type": "noop"})
    enqueue(client, {"type": "test.greet", "payload": {"name": "z"}, "delaySeconds": 600})
    status = client.get("/api/jobs/status/", headers=ADMIN).get_json()
    assert list(status) == STATUS_KEYS
    assert status["counts"] == {"pending": 2, "processing": 0, "completed": 1, "failed": 0, "cancelled": 0}
    assert (status["ready"], status["scheduled"]) == (1, 1)
    assert status["byType"] == {"noop": {"completed": 1, "pending": 1}, "test.greet": {"pending": 1}}
    assert [j["id"] for j in status["pending"]] == [ready["id"]] and done["id"] != ready["id"]
    assert list(status["pending"][0]) == JOB_KEYS
    assert isinstance(status["oldestReadyAgeSeconds"], int | float) and status["oldestReadyAgeSeconds"] >= 0
    last = status["lastDrain"]
    assert list(last) == ["at", "source", "processed", "durationMs", "stoppedBy"]
    assert (last["source"], last["processed"], last["stoppedBy"]) == ("api", 1, "empty")
    assert UTC_TIME.match(last["at"])


# -- public endpoints ------------------------------------------------------------------------------


def test_health_is_public(client: FlaskClient) -> None:
    for path in ("/api/health", "/api/health/"):
        response = client.get(path)
        assert response.status_code == 200 and response.get_json() == {"status": "ok"}
        assert response.headers["Cache-Control"] == "no-store"


def test_unreachable_database_is_503() -> None:
    # Port 9 on loopback refuses at once: an unreachable PostgreSQL without waiting for a timeout.
    app = create_app(api_settings("postgresql://postgres@127.0.0.1:9/nothing"))
    client = app.test_client()
    try:
        response = client.get("/api/health")
        assert response.status_code == 503 and response.get_json() == {"status": "unavailable"}
        error_of(client.get("/api/jobs/status", headers=ADMIN), 503, "unavailable")
        error_of(client.post("/api/jobs", json={"type": "noop"}, headers=ADMIN), 503, "unavailable")
        # Nothing about the database leaks into the health answer.
        assert b"127.0.0.1" not in response.data
    finally:
        app_state(app).dispose()


# -- routing: 404, 405, trailing slashes, no redirects, no-store -----------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/jobs/batch", "OPTIONS, POST"),
        ("GET", "/api/jobs/batch/", "OPTIONS, POST"),
        ("POST", "/api/jobs/status", "GET, HEAD, OPTIONS"),
        ("DELETE", "/api/jobs", "GET, HEAD, OPTIONS, POST"),
        ("PUT", "/api/jobs/process", "GET, HEAD, OPTIONS, POST"),
        ("DELETE", "/api/jobs/01a208cb-a66b-70c3-9a33-9bf0964f8085", "GET, HEAD, OPTIONS"),
        ("GET", "/api/jobs/01a208cb-a66b-70c3-9a33-9bf0964f8085/cancel", "OPTIONS, POST"),
        ("POST", "/api/health", "GET, HEAD, OPTIONS"),
        ("POST", "/api/openapi.json", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_405_with_allow_before_auth(
    client: FlaskClient, method: str, path: str, allow: str
) -> None:
    response = client.open(path, method=method)  # no credentials at all
    error_of(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allow


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/api/",
        "/api/nope",
        "/api/jobs/a/b",
        "/api/jobs/x/cancel/more",
        "/api//jobs",
        "/api/jobs//status",
        "/static/x.js",
    ],
)
def test_unknown_path_is_404_before_auth(client: FlaskClient, path: str) -> None:
    error_of(client.get(path), 404, "not_found")


ROUTES = [
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/status"),
    ("GET", "/api/jobs/process"),
    ("POST", "/api/jobs/process"),
    ("GET", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("POST", "/api/jobs/{id}/retry"),
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/nope"),
    ("GET", "/api/jobs/batch"),
]


@pytest.mark.parametrize("credentials", [ADMIN, {}, {"x-api-key": "wrong"}])
def test_trailing_slash_is_served_like_the_bare_path_and_nothing_redirects(
    client: FlaskClient, credentials: dict[str, str]
) -> None:
    for method, template in ROUTES:
        job = enqueue(client, {"type": "noop"})
        path = template.replace("{id}", job["id"])
        bare = client.open(path, method=method, headers=credentials)
        other = enqueue(client, {"type": "noop"})
        slashed = client.open(path.replace(job["id"], other["id"]) + "/", method=method, headers=credentials)
        assert bare.status_code == slashed.status_code, (method, path)
        assert not 300 <= bare.status_code < 400 and "Location" not in bare.headers
        assert bare.headers["Cache-Control"] == "no-store" == slashed.headers["Cache-Control"]
        assert bare.mimetype == "application/json"
    for body in ({"type": "noop"}, {"jobs": [{"type": "noop"}]}):
        path = "/api/jobs" if "type" in body else "/api/jobs/batch"
        for variant in (path, path + "/"):
            response = client.post(variant, json=body, headers=credentials)
            assert response.status_code in (201, 401), variant
            assert response.headers["Cache-Control"] == "no-store"


def test_every_error_and_success_carries_no_store(client: FlaskClient) -> None:
    responses = [
        client.get("/api/jobs", headers=ADMIN),
        client.get("/api/jobs"),
        client.get("/api/nope"),
        client.delete("/api/jobs"),
        client.post("/api/jobs", data=b"{", headers=ADMIN),
        client.post("/api/jobs", json={"type": "nope"}, headers=ADMIN),
        client.options("/api/jobs"),
        client.head("/api/health"),
    ]
    assert [r.headers.get("Cache-Control") for r in responses] == ["no-store"] * len(responses)


# -- OpenAPI ---------------------------------------------------------------------------------------


def test_openapi_document_is_public_and_covers_every_route(app: Flask, client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"] == {
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    }
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(
                r"<(?:\w+:)?(\w+)>", lambda m: "{id}" if m[1] == "job_id" else "{" + m[1] + "}", rule.rule
            )
            routes |= {(m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented
    schemas = doc["components"]["schemas"]
    assert schemas["Job"]["required"] == JOB_KEYS
    assert set(schemas["JobSpec"]["properties"]) == {
        "type", "payload", "runAt", "delaySeconds", "priority", "maxAttempts", "timeoutSeconds", "backoff",
        "idempotencyKey", "tenantId", "correlationId",
        "concurrencyKey", "concurrencyLimit", "debounce", "after", "callbackUrl",
    }  # fmt: skip
    assert schemas["JobSpec"]["additionalProperties"] is False
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            public = op.get("security") == []
            codes = set(op["responses"])
            assert "405" in codes, (method, path)
            if not public:
                assert {"401", "403", "503"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413", "422"} <= codes, (method, path)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")) and path != "/api/health":
                    assert answer["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }
    assert doc["paths"]["/api/jobs"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Job"
    }
    assert {"404", "409"} <= set(doc["paths"]["/api/jobs/{id}/cancel"]["post"]["responses"])
    # Built once per app.
    built = app_state(app).openapi
    assert client.get("/api/openapi.json").get_json() == doc
    assert app_state(app).openapi is built
