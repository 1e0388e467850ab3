"""Every route the app has, enumerated from its URL map, is protected unless it is on an explicit
public list: adding a route without authentication fails this test. Also who else is refused
(tenant keys on admin routes, the cron secret off the process path), and tenant isolation gaps
not covered by test_api_auth.py."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from api._state import app_state
from api.index import create_app
from lib import Queue
from tests.support.api import ADMIN, api_settings, enqueue, error_of
from tests.support.db import count

# Rules anyone may call: what they serve holds no data and no secret.
PUBLIC = {"/api/health", "/api/openapi.json", "/", "/dashboard", "/dashboard/<name>"}
# Endpoints a tenant key may call (scoped to its tenant); every other protected one is admin-only.
TENANT_ENDPOINTS = {
    "jobs.enqueue",
    "jobs.enqueue_batch",
    "jobs.list_jobs",
    "jobs.get_job",
    "jobs.cancel_job",
    "jobs.retry_job",
    "jobs.status",
    "jobs.job_attempts",
    "jobs.bulk_retry",
    "jobs.bulk_cancel",
}
# The one endpoint the cron secret opens.
CRON_ENDPOINTS = {"jobs.process"}
# A plausible value for each path variable; a new variable must be added here on purpose.
PATH_VALUES = {"job_id": "01a208cb-a66b-70c3-9a33-9bf0964f8085", "name": "nightly", "tenantId": "acme"}
RULE_VALUES = {"/dashboard/<name>": {"name": "app.js"}}
# Bodies that would succeed if authentication were skipped: a refusal must come first.
BODIES: dict[str, Any] = {
    "jobs.enqueue": {"type": "noop"},
    "jobs.enqueue_batch": {"jobs": [{"type": "noop"}]},
    "maintenance.put_schedule": {"cron": "* * * * *", "type": "noop"},
    "maintenance.run_cleanup": {},
    "jobs.bulk_retry": {"status": "failed", "dryRun": True},
    "jobs.bulk_cancel": {"status": "pending", "dryRun": True},
}
TENANT = {"x-api-key": "ta"}
GLOBEX = {"Authorization": "Bearer tg"}
CRON = {"Authorization": "Bearer cs"}
WRONG = [{}, {"x-api-key": "not-a-key"}, {"Authorization": "Bearer not-a-key"}, {"x-api-key": "cs"}]


@pytest.fixture(scope="module")
def routes_app(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    path = tmp_path_factory.mktemp("routes") / "sluice.db"
    shutil.copy(sqlite_template, path)
    app = create_app(api_settings(f"sqlite:///{path}"))
    yield app
    app_state(app).dispose()


def rules(app: Flask) -> list[Rule]:
    return sorted(app.url_map.iter_rules(), key=lambda rule: (rule.rule, rule.endpoint))


def concrete_path(rule: Rule) -> str:
    values = {**PATH_VALUES, **RULE_VALUES.get(rule.rule, {})}
    missing = rule.arguments - set(values)
    assert not missing, f"{rule.rule}: add a plausible value for {sorted(missing)} to PATH_VALUES"
    path = rule.rule
    for name, value in values.items():
        path = path.replace(f"<{name}>", value).replace(f"<id:{name}>", value)
    assert "<" not in path, path
    return path


def calls(app: Flask, *, public: bool) -> list[tuple[str, str, str, Any]]:
    """(endpoint, method, path, body) of every method of every (non-)public rule; OPTIONS is
    Flask's automatic answer and is checked on its own."""
    return [
        (rule.endpoint, method, concrete_path(rule), BODIES.get(rule.endpoint))
        for rule in rules(app)
        if (rule.rule in PUBLIC) == public
        for method in sorted((rule.methods or set()) - {"OPTIONS"})
    ]


def open_(client: FlaskClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.open(path, method=method, json=body, headers=headers)


def refused(response: Any, method: str, status: int, code: str) -> None:
    if method == "HEAD":  # no body to read; the status is what counts
        assert response.status_code == status and response.get_data() == b""
    else:
        error_of(response, status, code)


def test_the_route_list_is_what_these_tests_know(routes_app: Flask) -> None:
    """A new route shows up here first: protected ones are then checked below automatically."""
    endpoints = {rule.endpoint for rule in rules(routes_app)}
    assert endpoints >= TENANT_ENDPOINTS | CRON_ENDPOINTS
    assert {rule.rule for rule in rules(routes_app)} >= PUBLIC
    assert len(calls(routes_app, public=False)) >= 20


def test_every_protected_route_refuses_missing_and_wrong_credentials(routes_app: Flask) -> None:
    client = routes_app.test_client()
    queue = app_state(routes_app).queue
    for endpoint, method, path, body in calls(routes_app, public=False):
        for headers in WRONG:
            response = open_(client, method, path, body, headers)
            assert response.status_code == 401, (endpoint, method, path, headers, response.status_code)
            refused(response, method, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert count(queue) == 0
    assert client.get("/api/schedules", headers=ADMIN).get_json() == {"schedules": []}


def test_tenant_keys_and_the_cron_secret_only_open_their_routes(routes_app: Flask) -> None:
    client = routes_app.test_client()
    queue = app_state(routes_app).queue
    for endpoint, method, path, body in calls(routes_app, public=False):
        if endpoint not in TENANT_ENDPOINTS:
            response = open_(client, method, path, body, TENANT)
            assert response.status_code == 403, (endpoint, method, response.status_code)
            refused(response, method, 403, "forbidden")
        if endpoint not in CRON_ENDPOINTS:
            response = open_(client, method, path, body, CRON)
            assert response.status_code == 403, (endpoint, method, response.status_code)
            refused(response, method, 403, "forbidden")
    assert count(queue) == 0
    assert client.get("/api/schedules", headers=ADMIN).get_json() == {"schedules": []}


def test_public_routes_answer_without_credentials(routes_app: Flask) -> None:
    """The allow-list stays honest: each entry really is public (a stale entry would hide a gap)."""
    client = routes_app.test_client()
    for _, method, path, body in calls(routes_app, public=True):
        response = open_(client, method, path, body, {})
        assert response.status_code == 200, (method, path, response.status_code)
        if method == "GET" and path == "/api/health":
            assert response.get_json() == {"status": "ok"}


def test_options_answers_only_the_allowed_methods(routes_app: Flask) -> None:
    """OPTIONS needs no key (Flask answers it without running the route) and says nothing else."""
    client = routes_app.test_client()
    for rule in rules(routes_app):
        response = client.options(concrete_path(rule))
        assert response.status_code == 200 and response.get_data() == b"", rule.rule
        assert set(response.headers["Allow"].split(", ")) >= (rule.methods or set()), rule.rule


# -- tenant isolation: what test_api_auth.py does not cover ------------------------------------------


def test_another_tenants_pending_job_cannot_be_cancelled_read_or_listed(db_url: str, queue: Queue) -> None:
    app = create_app(api_settings(db_url))
    client = app.test_client()
    try:
        theirs = enqueue(client, {"type": "noop", "idempotencyKey": "k"}, GLOBEX)
        for method, path in (
            ("GET", f"/api/jobs/{theirs['id']}"),
            ("POST", f"/api/jobs/{theirs['id']}/cancel"),
            ("POST", f"/api/jobs/{theirs['id']}/retry"),
        ):
            error_of(client.open(path, method=method, headers=TENANT), 404, "not_found")
        # Listing: by type, by status, or paging from their job's id shows none of their jobs.
        for query in ("?type=noop", "?status=pending", f"?cursor={theirs['id']}", "?limit=500"):
            assert client.get(f"/api/jobs{query}", headers=TENANT).get_json()["jobs"] == [], query
        error_of(client.get("/api/jobs?tenantId=globex", headers=TENANT), 403, "forbidden")
        # Reusing their idempotency key makes a job of our own, not a view of theirs.
        mine = enqueue(client, {"type": "noop", "idempotencyKey": "k"}, TENANT)
        assert mine["id"] != theirs["id"] and mine["tenantId"] == "acme"
        status = client.get("/api/jobs/status", headers=TENANT).get_json()
        assert [job["id"] for job in status["pending"]] == [mine["id"]]
        assert count(queue, "status = 'pending'") == 2
    finally:
        app_state(app).dispose()


def test_every_body_is_bounded_chunked_or_not(routes_app: Flask) -> None:
    """JOBS_MAX_BODY_BYTES holds on every route that reads a body, chunked ones included (no
    length to check up front): a valid JSON object followed by blanks past the limit is 413."""
    client = routes_app.test_client()
    limit = app_state(routes_app).settings.jobs_max_body_bytes
    chunked = {**ADMIN, "Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    for endpoint, method, path, body in calls(routes_app, public=False):
        if endpoint not in BODIES:
            continue
        raw = json.dumps(body).encode() + b" " * limit
        for headers, environ in ((chunked, {"wsgi.input_terminated": True}), (ADMIN, {})):
            response = client.open(
                path, method=method, input_stream=io.BytesIO(raw), headers=headers, environ_overrides=environ
            )
            assert response.status_code == 413, (endpoint, method, headers, response.status_code)
            refused(response, method, 413, "payload_too_large")
    assert count(app_state(routes_app).queue) == 0


def test_no_route_enqueues_an_internal_type(routes_app: Flask) -> None:
    """Every route whose body names a job type refuses Sluice's own types, for admins too."""
    client = routes_app.test_client()
    typed = {"jobs.enqueue", "jobs.enqueue_batch", "maintenance.put_schedule"}
    for endpoint, method, path, body in calls(routes_app, public=False):
        if endpoint not in typed:
            continue
        text = json.dumps(body).replace('"noop"', '"alert.deadletter"')
        response = open_(client, method, path, json.loads(text), ADMIN)
        refused(response, method, 422, "validation_error")
    assert count(app_state(routes_app).queue) == 0
    assert client.get("/api/schedules", headers=ADMIN).get_json() == {"schedules": []}
