"""Enqueue → claim → run → record, step by step, on both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lib import JobSpec, Queue, UnknownJobType, ValidationError
from tests.support.db import count


def test_enqueue_then_drain_completes_with_result(queue: Queue) -> None:
    job = queue.enqueue("test.greet", {"name": "ada"})
    assert job.status == "pending" and job.attempts == 0 and job.max_attempts == 2
    summary = queue.drain(max_jobs=10)
    assert (summary.processed, summary.succeeded, summary.stopped_by) == (1, 1, "empty")
    done = queue.get(job.id)
    assert done.status == "completed"
    assert done.result == {"greeting": "hello ada", "attempt": 1}
    assert done.progress == 100 and done.step == "halfway"
    assert done.finished_at is not None and done.started_at is not None
    assert count(queue, "status = 'completed' AND claim_token IS NULL AND lease_expires_at IS NULL") == 1


def test_bad_payload_names_the_field_and_writes_nothing(queue: Queue) -> None:
    with pytest.raises(ValidationError) as err:
        queue.enqueue("test.greet", {"name": 5})
    assert err.value.details[0]["loc"] == "payload.name"
    with pytest.raises(UnknownJobType):
        queue.enqueue("nope", {})
    assert count(queue) == 0


def test_retry_then_dead_letter(queue: Queue) -> None:
    job = queue.enqueue("test.fail", {}, max_attempts=2, backoff={"strategy": "fixed", "delaySeconds": 0})
    first = queue.drain(max_jobs=1)
    assert (first.processed, first.retried, first.failed) == (1, 1, 0)
    assert queue.get(job.id).status == "pending" and queue.get(job.id).attempts == 1
    second = queue.drain(max_jobs=1)
    assert (second.processed, second.retried, second.failed) == (1, 0, 1)
    dead = queue.get(job.id)
    assert dead.status == "failed" and dead.attempts == 2
    assert dead.last_error == "RuntimeError: boom"


def test_permanent_error_fails_at_once(queue: Queue) -> None:
    job = queue.enqueue("test.permanent", {}, max_attempts=5)
    assert queue.drain().failed == 1
    assert queue.get(job.id).status == "failed" and queue.get(job.id).attempts == 1


def test_retry_later_does_not_count_the_attempt(queue: Queue) -> None:
    job = queue.enqueue("test.later", {"seconds": 120})
    summary = queue.drain()
    assert summary.retried == 1
    got = queue.get(job.id)
    assert got.status == "pending" and got.attempts == 0
    assert count(queue, "status='pending'") == 1
    assert queue.status().scheduled == 1


def test_idempotency_key_returns_existing(queue: Queue) -> None:
    first = queue.submit(JobSpec(type="noop", idempotency_key="k1"))
    again = queue.submit(JobSpec(type="noop", idempotency_key="k1", priority=5))
    assert first.created and not again.created
    assert again.job.id == first.job.id and again.job.priority == 0
    other_tenant = queue.submit(JobSpec(type="noop", idempotency_key="k1", tenant_id="t2"))
    assert other_tenant.created
    assert count(queue) == 2


def test_transactional_enqueue_rolls_back(queue: Queue) -> None:
    with pytest.raises(RuntimeError), queue.engine.begin() as conn:
        queue.enqueue("noop", {}, conn=conn)
        raise RuntimeError("caller's work failed")
    assert count(queue) == 0
    with queue.engine.begin() as conn:
        queue.enqueue("noop", {}, conn=conn)
    assert count(queue) == 1


def test_priority_then_fifo(queue: Queue) -> None:
    low = queue.enqueue("noop", {}, priority=-5)
    first = queue.enqueue("noop", {})
    high = queue.enqueue("noop", {}, priority=10)
    second = queue.enqueue("noop", {})
    order = []
    for _ in range(4):
        queue.drain(max_jobs=1)
        with queue.engine.connect() as conn:
            done = (
                conn.execute(sa.text("SELECT id FROM sluice_jobs WHERE status='completed'")).scalars().all()
            )
        order.append(next(str(i) for i in map(str, done) if str(i) not in order))
    norm = lambda s: s.replace("-", "")  # noqa: E731  (SQLite stores uuids as hex)
    assert [norm(x) for x in order] == [norm(j.id) for j in (high, first, second, low)]


def test_delay_is_not_claimed_early(queue: Queue) -> None:
    queue.enqueue("noop", {}, delay_seconds=3600)
    summary = queue.drain()
    assert (summary.processed, summary.remaining, summary.stopped_by) == (0, 0, "empty")
    status = queue.status()
    assert (status.ready, status.scheduled, status.counts["pending"]) == (0, 1, 1)


def test_max_jobs_stops_and_reports_remaining(queue: Queue) -> None:
    queue.enqueue_many([JobSpec(type="noop") for _ in range(7)])
    summary = queue.drain(max_jobs=5)
    assert (summary.processed, summary.remaining, summary.stopped_by) == (5, 2, "maxJobs")


def test_cancel_and_retry_transitions(queue: Queue) -> None:
    job = queue.enqueue("noop", {})
    assert queue.cancel(job.id).status == "cancelled"
    with pytest.raises(Exception) as err:
        queue.cancel(job.id)
    assert type(err.value).__name__ == "Conflict"
    again = queue.retry(job.id)
    assert again.status == "pending" and again.attempts == 0
    assert queue.drain().succeeded == 1


def test_unserialisable_result_fails(queue: Queue) -> None:
    job = queue.enqueue("test.unserialisable", {})
    assert queue.drain().failed == 1
    assert "JSON" in (queue.get(job.id).last_error or "")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "nul\x00here", "lone \ud800"])
def test_unstorable_payload_is_a_validation_error_not_a_database_error(queue: Queue, bad: object) -> None:
    with pytest.raises(ValidationError) as err:
        queue.enqueue("noop", {"x": bad})
    assert err.value.details[0]["loc"] == "payload"
    assert count(queue) == 0
