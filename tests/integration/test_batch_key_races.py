"""A batch re-posted while the jobs holding its idempotency keys are being deleted (cleanup,
erase) answers 201 with every job, all or nothing: the insert and the read-back of reused keys
share one transaction, and a key whose job vanished in between is inserted after all."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from api._state import app_state
from lib.store import jobs as job_store
from tests.support.db import count

TENANT = {"x-api-key": "ta"}  # acme


def batch(keys: range) -> dict[str, Any]:
    return {"jobs": [{"type": "noop", "idempotencyKey": f"k-{i}"} for i in keys]}


def before_read_back(monkeypatch: pytest.MonkeyPatch, action: Callable[[sa.Connection], None]) -> None:
    """Run ``action`` once, between the insert and the read-back of reused keys."""
    real = job_store._existing_by_key
    done: list[bool] = []

    def wrapped(conn: sa.Connection, new: Any) -> Any:
        if not done:
            done.append(True)
            action(conn)
        return real(conn, new)

    monkeypatch.setattr(job_store, "_existing_by_key", wrapped)


def test_keys_whose_jobs_vanish_mid_batch_are_inserted(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = app_state(client.application).queue
    first = client.post("/api/jobs/batch", json=batch(range(600)), headers=TENANT)
    assert first.status_code == 201
    old_ids = {job["idempotencyKey"]: job["id"] for job in first.get_json()["jobs"]}
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_jobs SET status = 'completed', finished_at = created_at"))

    def erase_some(conn: sa.Connection) -> None:
        # k-0..k-299 are deleted and committed by someone else (on SQLite, whose writer lock we
        # hold, the same effect comes from our own connection).
        where = "idempotency_key IN (" + ",".join(f"'k-{i}'" for i in range(300)) + ")"
        if queue.dialect == "postgresql":
            with queue.engine.begin() as other:
                assert other.execute(sa.text(f"DELETE FROM sluice_jobs WHERE {where}")).rowcount == 300
        else:
            assert conn.execute(sa.text(f"DELETE FROM sluice_jobs WHERE {where}")).rowcount == 300

    before_read_back(monkeypatch, erase_some)
    again = client.post("/api/jobs/batch", json=batch(range(1000)), headers=TENANT)
    assert again.status_code == 201, again.get_data(as_text=True)[:300]
    jobs = again.get_json()["jobs"]
    assert [job["idempotencyKey"] for job in jobs] == [f"k-{i}" for i in range(1000)]
    reused = [job for job in jobs if old_ids.get(job["idempotencyKey"]) == job["id"]]
    assert [job["idempotencyKey"] for job in reused] == [f"k-{i}" for i in range(300, 600)]
    assert {job["status"] for job in reused} == {"completed"}
    assert {job["status"] for job in jobs if job not in reused} == {"pending"}
    assert count(queue) == 1000
    assert count(queue, "status = 'pending'") == 700
    ids = {job["id"] for job in jobs}
    with queue.engine.connect() as conn:
        stored = {
            str(uuid.UUID(str(i))) for i in conn.execute(sa.text("SELECT id FROM sluice_jobs")).scalars()
        }
    assert stored == ids


def test_a_keyed_batch_is_all_or_nothing(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = app_state(client.application).queue
    assert client.post("/api/jobs/batch", json=batch(range(600)), headers=TENANT).status_code == 201

    def connection_lost(conn: sa.Connection) -> None:
        raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

    before_read_back(monkeypatch, connection_lost)
    refused = client.post("/api/jobs/batch", json=batch(range(1000)), headers=TENANT)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "unavailable"
    # None of the 400 new jobs was kept.
    assert count(queue) == 600
