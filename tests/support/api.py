"""The HTTP API in tests: settings for an app on the test database, requests and error bodies."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from lib.config import Settings

ADMIN = {"x-api-key": "k1"}
JOB_KEYS = [
    "id", "type", "payload", "status", "priority", "attempts", "maxAttempts", "timeoutSeconds",
    "runAt", "createdAt", "startedAt", "finishedAt", "lastError", "result", "progress",
    "tenantId", "correlationId", "idempotencyKey", "step",
    "concurrencyKey", "concurrencyLimit", "debounceKey", "after", "callbackUrl",
]  # fmt: skip


def api_settings(db_url: str, **overrides: Any) -> Settings:
    """Two admin keys (rotation), two tenants, a cron secret and the test job types."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "jobs_api_keys": "k1,k2",
        "jobs_tenant_keys": "acme:ta,globex:tg",
        "cron_secret": "cs",
        "jobs_handler_modules": "tests.jobtypes",
    }
    return Settings(**{**values, **overrides})


def enqueue(client: FlaskClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    response = client.post("/api/jobs", json=body, headers=headers or ADMIN)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert list(body) == ["error"]
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error
