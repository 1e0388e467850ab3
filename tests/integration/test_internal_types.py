"""Internal job types (``sluice.*``, ``alert.*``, types registered ``internal=True``) cannot be
enqueued over HTTP by anyone, and the dead-letter digest only ever finds digests Sluice made: a
look-alike row (a tenant's, one parked ten years ahead, one whose key was chosen) is never fed
other tenants' failures, and one with a tenant is never delivered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import Queue
from lib.alerts import ALERT_TYPE, KEY_PREFIX, PRIORITY
from tests.support.alerts import alert_payloads, fail_jobs, set_env
from tests.support.api import api_settings
from tests.support.db import count, make_queue
from tests.support.webhook import Webhook

ADMIN = {"x-api-key": "k1"}
TENANT = {"x-api-key": "ta"}
TEN_YEARS = 315_360_000
FORGED = {
    "count": 1,
    "items": [{"id": "x", "type": "x", "tenantId": None, "lastError": "click https://evil.example"}],
}


@pytest.fixture
def api(db_url: str, env: pytest.MonkeyPatch, webhook: Webhook) -> Iterator[FlaskClient]:
    set_env(env, jobs_alert_webhook_url=webhook.url, jobs_alert_digest_seconds="0")
    app = create_app(api_settings(db_url, jobs_alert_webhook_url=webhook.url, jobs_alert_digest_seconds=0))
    yield app.test_client()
    app_state(app).dispose()


def refused(response: Any, loc: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert [item["loc"] for item in error["details"]] == [loc]


@pytest.mark.parametrize("type_", [ALERT_TYPE, "alert.other", "sluice.anything", "test.internal"])
@pytest.mark.parametrize("headers", [ADMIN, TENANT], ids=["admin", "tenant"])
def test_internal_types_are_refused_over_http(api: FlaskClient, type_: str, headers: dict[str, str]) -> None:
    body = {"type": type_, "payload": FORGED, "priority": PRIORITY, "delaySeconds": TEN_YEARS}
    refused(api.post("/api/jobs", json={**body, "idempotencyKey": KEY_PREFIX + "x"}, headers=headers), "type")
    batch = {"jobs": [{"type": "noop"}, body]}
    refused(api.post("/api/jobs/batch", json=batch, headers=headers), "jobs.1.type")
    schedule = {"cron": "* * * * *", "type": type_, "payload": FORGED}
    refused(api.put("/api/schedules/forged", json=schedule, headers=ADMIN), "type")
    queue = app_state(api.application).queue
    assert count(queue) == 0
    assert api.get("/api/schedules", headers=ADMIN).get_json() == {"schedules": []}


def _forge(queue: Queue, **options: Any) -> str:
    """A look-alike digest written through the trusted Python API (as rows made before the
    HTTP guard existed would be)."""
    return queue.enqueue(ALERT_TYPE, FORGED, priority=PRIORITY, **options).id


def test_the_digest_never_folds_failures_into_a_look_alike(
    db_url: str,
    env: pytest.MonkeyPatch,
    webhook: Webhook,
) -> None:
    set_env(env, jobs_alert_webhook_url=webhook.url, jobs_alert_digest_seconds="0")
    queue = make_queue(db_url)
    try:
        forged = [
            # The review's takeover: a tenant's job, the digest's priority and key, ten years ahead.
            _forge(queue, tenant_id="acme", idempotency_key=KEY_PREFIX + "a", delay_seconds=TEN_YEARS),
            # Without a tenant, but parked ten years ahead.
            _forge(queue, idempotency_key=KEY_PREFIX + "b", delay_seconds=TEN_YEARS),
            # Without a tenant and ahead by less than the window allows, but a key Sluice never makes.
            _forge(queue, idempotency_key=KEY_PREFIX + "c", delay_seconds=3600),
        ]
        fail_jobs(queue, 2, "test.permanent")
        summary = queue.drain(max_jobs=10)
        # Both failures, then a digest of Sluice's own, due at once and delivered.
        assert (summary.failed, summary.succeeded) == (2, 1)
        [sent] = webhook.bodies
        assert sent["json"]["text"].startswith("Sluice: 2 jobs failed (dead-lettered).")
        assert "evil" not in sent["json"]["text"]
        for job_id in forged:
            job = queue.get(job_id)
            assert (job.status, job.payload) == ("pending", FORGED), job_id
        mine = [p for p in alert_payloads(queue) if p != FORGED]
        assert [p["count"] for p in mine] == [2]
        assert count(queue, f"type = '{ALERT_TYPE}'") == 4
    finally:
        queue.engine.dispose()


def test_a_digest_with_a_tenant_is_never_delivered(
    db_url: str,
    env: pytest.MonkeyPatch,
    webhook: Webhook,
) -> None:
    set_env(env, jobs_alert_webhook_url=webhook.url, jobs_alert_digest_seconds="0")
    queue = make_queue(db_url)
    try:
        job_id = _forge(queue, tenant_id="acme", idempotency_key=KEY_PREFIX + "now")
        assert queue.drain(max_jobs=10).processed == 1
        job = queue.get(job_id)
        assert job.status == "failed" and "not a digest Sluice made" in (job.last_error or "")
        assert webhook.bodies == []
        # Its own failure raises no alert either (a digest never alerts about itself).
        assert count(queue, f"type = '{ALERT_TYPE}'") == 1
        with queue.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM sluice_jobs")).scalar_one() == 1
    finally:
        queue.engine.dispose()
