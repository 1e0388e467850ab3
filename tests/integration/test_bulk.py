"""POST /api/jobs/retry and /api/jobs/cancel: many jobs by filter, with a dry run first."""

from __future__ import annotations

from flask.testing import FlaskClient

from lib import Queue
from tests.support.api import ADMIN, error_of
from tests.support.db import count

TENANT = {"x-api-key": "ta"}


def test_retry_by_type_and_status_with_a_dry_run_first(client: FlaskClient, queue: Queue) -> None:
    failed = [queue.enqueue("test.permanent", {}) for _ in range(3)]
    other = queue.enqueue("test.fail", {}, max_attempts=1)
    queue.drain(max_jobs=10)
    assert count(queue, "status = 'failed'") == 4
    body = {"type": "test.permanent", "status": "failed", "dryRun": True}
    dry = client.post("/api/jobs/retry", json=body, headers=ADMIN)
    assert dry.status_code == 200 and dry.get_json() == {"matched": 3, "changed": 0}
    assert count(queue, "status = 'failed'") == 4
    done = client.post("/api/jobs/retry", json={**body, "dryRun": False}, headers=ADMIN)
    assert done.get_json() == {"matched": 3, "changed": 3}
    for job in failed:
        again = queue.get(job.id)
        assert (again.status, again.attempts, again.last_error) == (
            "pending",
            0,
            "PermanentError: bad input, don't retry",
        )
    assert queue.get(other.id).status == "failed"


def test_cancel_by_ids_and_created_before_touches_pending_only(client: FlaskClient, queue: Queue) -> None:
    pending = [queue.enqueue("noop", {}, delay_seconds=3600) for _ in range(3)]
    done = queue.enqueue("test.greet", {"name": "ada"})
    queue.drain()
    ids = [job.id for job in pending[:2]] + [done.id, "not-an-id"]
    answer = client.post("/api/jobs/cancel", json={"ids": ids}, headers=ADMIN).get_json()
    assert answer == {"matched": 2, "changed": 2}
    assert count(queue, "status = 'cancelled'") == 2
    assert queue.get(pending[2].id).status == "pending" and queue.get(done.id).status == "completed"
    later = "2999-01-01T00:00:00Z"
    assert client.post("/api/jobs/cancel", json={"createdBefore": later}, headers=ADMIN).get_json() == {
        "matched": 1,
        "changed": 1,
    }
    assert count(queue, "status = 'cancelled'") == 3


def test_limit_bounds_one_call(client: FlaskClient, queue: Queue) -> None:
    for _ in range(5):
        queue.enqueue("noop", {}, delay_seconds=3600)
    answer = client.post("/api/jobs/cancel", json={"type": "noop", "limit": 2}, headers=ADMIN).get_json()
    assert answer == {"matched": 2, "changed": 2}
    assert count(queue, "status = 'pending'") == 3


def test_a_tenant_key_acts_on_its_own_jobs_only(client: FlaskClient, queue: Queue) -> None:
    queue.enqueue("noop", {}, tenant_id="acme", delay_seconds=3600)
    queue.enqueue("noop", {}, tenant_id="globex", delay_seconds=3600)
    queue.enqueue("noop", {}, delay_seconds=3600)
    answer = client.post("/api/jobs/cancel", json={"type": "noop"}, headers=TENANT).get_json()
    assert answer == {"matched": 1, "changed": 1}
    assert count(queue, "status = 'cancelled' AND tenant_id = 'acme'") == 1
    assert count(queue, "status = 'pending'") == 2
    error_of(client.post("/api/jobs/cancel", json={"tenantId": "globex"}, headers=TENANT), 403, "forbidden")


def test_bad_bulk_bodies_are_422(client: FlaskClient, queue: Queue) -> None:
    queue.enqueue("noop", {}, delay_seconds=3600)
    for body in (
        {},
        {"dryRun": True},
        {"status": "nope"},
        {"type": "noop", "limit": 0},
        {"type": "noop", "limit": 10001},
        {"ids": ["x"] * 1001},
        {"createdBefore": "2026-01-01T00:00:00"},
        {"type": "noop", "extra": 1},
        {"type": "noop", "dryRun": "yes"},
    ):
        for verb in ("retry", "cancel"):
            error_of(client.post(f"/api/jobs/{verb}", json=body, headers=ADMIN), 422, "validation_error")
    assert count(queue, "status = 'pending'") == 1
    error_of(client.get("/api/jobs/retry", headers=ADMIN), 405, "method_not_allowed")
