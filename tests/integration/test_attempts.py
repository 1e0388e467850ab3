"""Attempt history: one row per attempt with its outcome, error and the handler's traceback;
served by GET /api/jobs/<id>/attempts, scoped like the job, deleted with the job."""

from __future__ import annotations

import sqlalchemy as sa
from flask.testing import FlaskClient

from lib import JobSpec, Queue
from tests.support.api import ADMIN, error_of
from tests.support.db import drain_together, make_queue

TENANT = {"x-api-key": "ta"}
GLOBEX = {"x-api-key": "tg"}


def attempt_rows(queue: Queue, where: str = "1=1") -> int:
    with queue.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM sluice_attempts WHERE {where}")).scalar_one())


def test_a_failing_job_keeps_every_attempt_with_the_handlers_traceback(
    client: FlaskClient, queue: Queue
) -> None:
    job = queue.enqueue("test.explode", {"secret": "hunter2-SECRET"})
    queue.drain()
    with queue.engine.begin() as conn:  # make the retry due now
        conn.execute(sa.text("UPDATE sluice_jobs SET run_at = created_at"))
    queue.drain()
    assert queue.get(job.id).status == "failed"
    response = client.get(f"/api/jobs/{job.id}/attempts", headers=ADMIN)
    assert response.status_code == 200
    attempts = response.get_json()["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "retried"), (2, "failed")]
    for item in attempts:
        assert item["error"] == "ValueError: length 14 is not allowed"
        trace = item["traceback"]
        assert trace.startswith("Traceback (most recent call last):")
        assert "in explode" in trace and "in _check_length" in trace
        assert trace.rstrip().endswith("ValueError: length 14 is not allowed")
        # The handler's frames only, and no local variables: the payload value never appears.
        assert "drain.py" not in trace and "registry.py" not in trace
        assert "hunter2" not in trace
        assert item["durationMs"] is not None and item["durationMs"] >= 0
        assert item["startedAt"].endswith("Z") and item["finishedAt"].endswith("Z")
    assert attempt_rows(queue) == 2


def test_completed_deferred_and_permanent_attempts_are_named(client: FlaskClient, queue: Queue) -> None:
    done = queue.enqueue("test.greet", {"name": "ada"})
    later = queue.enqueue("test.later", {"seconds": 60})
    permanent = queue.enqueue("test.permanent", {})
    queue.drain()

    def outcomes(job_id: str) -> list[tuple[str, str | None]]:
        body = client.get(f"/api/jobs/{job_id}/attempts", headers=ADMIN).get_json()
        return [(a["outcome"], a["error"]) for a in body["attempts"]]

    assert outcomes(done.id) == [("completed", None)]
    # A completing attempt is read from the job row: no history row is written for it.
    assert attempt_rows(queue, "outcome = 'completed'") == 0
    assert outcomes(later.id) == [("deferred", "RetryLater: not yet")]
    assert outcomes(permanent.id) == [("failed", "PermanentError: bad input, don't retry")]
    trace = client.get(f"/api/jobs/{permanent.id}/attempts", headers=ADMIN).get_json()["attempts"][0]
    assert "in permanent" in trace["traceback"]
    assert (
        client.get(f"/api/jobs/{done.id}/attempts", headers=ADMIN).get_json()["attempts"][0]["traceback"]
        is None
    )


def test_an_expired_lease_is_an_attempt_of_its_own(client: FlaskClient, queue: Queue) -> None:
    job = queue.enqueue("test.greet", {"name": "ada"})
    with queue.engine.begin() as conn:
        # What a worker killed mid-job leaves: processing, attempt 1 counted, its lease run out.
        conn.execute(
            sa.text(
                "UPDATE sluice_jobs SET status = 'processing', attempts = 1, started_at = created_at, "
                "lease_expires_at = created_at"
            )
        )
    queue.drain()
    queue.drain()  # a second drain must not write the expired attempt again
    attempts = client.get(f"/api/jobs/{job.id}/attempts", headers=ADMIN).get_json()["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "lease_expired"), (2, "completed")]
    assert "lease expired" in attempts[0]["error"]
    assert queue.get(job.id).status == "completed"


def test_attempts_are_scoped_like_the_job(client: FlaskClient, queue: Queue) -> None:
    response = client.post("/api/jobs", json={"type": "test.fail"}, headers=TENANT)
    job_id = response.get_json()["id"]
    queue.drain()
    assert len(client.get(f"/api/jobs/{job_id}/attempts", headers=TENANT).get_json()["attempts"]) == 1
    error_of(client.get(f"/api/jobs/{job_id}/attempts", headers=GLOBEX), 404, "not_found")
    error_of(client.get("/api/jobs/not-a-job/attempts", headers=ADMIN), 404, "not_found")
    never_ran = client.post("/api/jobs", json={"type": "noop"}, headers=ADMIN).get_json()["id"]
    never = client.get(f"/api/jobs/{never_ran}/attempts", headers=ADMIN).get_json()
    assert never == {"attempts": [], "steps": []}


def test_attempts_go_with_their_job_on_cleanup_and_erase(queue: Queue) -> None:
    kept = queue.enqueue("test.fail", {}, max_attempts=1)
    gone = queue.enqueue("test.later", {"seconds": 3600})
    erased = queue.enqueue("test.fail", {}, tenant_id="acme", max_attempts=1)
    queue.drain()
    queue.cancel(gone.id)
    assert attempt_rows(queue) == 3
    result = queue.retention.cleanup(
        completed_older_than=3600, failed_older_than=3600, cancelled_older_than=0
    )
    assert result.deleted["cancelled"] == 1
    assert attempt_rows(queue, f"job_id = '{_stored(queue, gone.id)}'") == 0
    queue.retention.erase_tenant("acme")
    assert attempt_rows(queue, f"job_id = '{_stored(queue, erased.id)}'") == 0
    assert attempt_rows(queue) == 1
    assert attempt_rows(queue, f"job_id = '{_stored(queue, kept.id)}'") == 1


def _stored(queue: Queue, job_id: str) -> str:
    """A job id as the dialect stores it (SQLite: 32 hex digits)."""
    return job_id.replace("-", "") if queue.dialect == "sqlite" else job_id


def test_step_text_is_on_the_job_and_a_completed_job_shows_100(client: FlaskClient, queue: Queue) -> None:
    job = queue.enqueue("test.greet", {"name": "ada"})
    queue.drain()
    body = client.get(f"/api/jobs/{job.id}", headers=ADMIN).get_json()
    assert body["status"] == "completed"
    assert body["progress"] == 100
    assert body["step"] == "halfway"
    assert client.post(f"/api/jobs/{job.id}/retry", headers=ADMIN).status_code == 409
    fresh = client.post("/api/jobs", json={"type": "noop"}, headers=ADMIN).get_json()
    assert fresh["step"] is None and fresh["progress"] is None


def test_overlapping_drains_write_one_lease_expired_attempt_per_job(db_url: str, queue: Queue) -> None:
    jobs = queue.enqueue_many([JobSpec(type="noop") for _ in range(50)])
    with queue.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sluice_jobs SET status = 'processing', attempts = 1, started_at = created_at, "
                "lease_expires_at = created_at"
            )
        )
    queues = [make_queue(db_url) for _ in range(4)]
    try:
        drain_together(queues, max_jobs=100)
    finally:
        for q in queues:
            q.engine.dispose()
    assert attempt_rows(queue, "outcome = 'lease_expired'") == 50
    with queue.engine.connect() as conn:
        most = conn.execute(
            sa.text("SELECT max(n) FROM (SELECT count(*) AS n FROM sluice_attempts GROUP BY job_id) AS t")
        ).scalar_one()
    assert most == 1
    assert all(queue.get(job.id).status == "completed" for job in jobs)
