"""Rate limits on both databases: per type and key at run time (also under overlapping drains),
and the per-tenant enqueue quota."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Job, JobContext, JobSpec, Queue, aws, job
from lib.config import get_settings
from lib.errors import RateLimited
from lib.rates import Rate, parse_key, parse_rate, parse_rates
from tests.support.db import count, drain_together, make_queue


@job("test.rate.limited", rate_limit="3/hour", rate_key="payload.user")
def limited(payload: dict[str, Any], ctx: JobContext) -> int:
    time.sleep(float(payload.get("sleep", 0)))
    return ctx.attempt


@job("test.rate.global", rate_limit="2/minute")
def whole_type(payload: dict[str, Any]) -> None:
    return None


def enqueue(queue: Queue, n: int, **payload: Any) -> None:
    queue.enqueue_many([JobSpec(type="test.rate.limited", payload=payload) for _ in range(n)])


def seconds_until_due(queue: Queue, where: str) -> list[float]:
    """For each matching job: how long after its creation it is due."""
    return [(job.run_at - job.created_at).total_seconds() for job in jobs_where(queue, where)]


def jobs_where(queue: Queue, where: str) -> list[Job]:
    with queue.engine.connect() as conn:
        ids = conn.execute(sa.text(f"SELECT id FROM sluice_jobs WHERE {where}")).scalars().all()
    return [queue.get(str(job_id)) for job_id in ids]


def test_parse_rates() -> None:
    assert parse_rate("50/hour") == Rate(50, 3600)
    assert parse_rate(" 10 / 15min ") == Rate(10, 900)
    assert parse_rate("1000/day") == Rate(1000, 86_400)
    assert parse_rates("email.ses=50/hour, sms=20/h") == {"email.ses": Rate(50, 3600), "sms": Rate(20, 3600)}
    assert parse_key("payload.user.id") == ("user", "id") and parse_key(None) is None
    for bad in ("50", "0/hour", "5/fortnight", "5/32d", "-1/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    for bad_key in ("userId", "payload.", "payload..x"):
        with pytest.raises(ValueError):
            parse_key(bad_key)


def test_limit_per_key_defers_without_counting_an_attempt(queue: Queue) -> None:
    enqueue(queue, 5, user="u1")
    enqueue(queue, 2, user="u2")
    enqueue(queue, 1)  # no key: not limited
    summary = queue.drain(max_jobs=20)
    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (8, 6, 2, 0)
    assert count(queue, "status = 'completed'") == 6
    assert count(queue, "status = 'pending' AND attempts = 0 AND started_at IS NULL") == 2
    deferred = seconds_until_due(queue, "status = 'pending'")
    assert len(deferred) == 2 and all(3500 < s <= 3601 for s in deferred), deferred
    with queue.engine.connect() as conn:
        errors = conn.execute(
            sa.text("SELECT last_error FROM sluice_jobs WHERE status = 'pending'")
        ).scalars()
        assert all(e.startswith("rate limit reached; next try in") for e in errors)
    # A later drain in the same hour runs none of them.
    assert queue.drain(max_jobs=20).processed == 0


def test_limit_for_the_whole_type(queue: Queue) -> None:
    queue.enqueue_many([JobSpec(type="test.rate.global") for _ in range(4)])
    summary = queue.drain(max_jobs=10)
    assert (summary.succeeded, summary.retried) == (2, 2)
    assert all(50 < s <= 61 for s in seconds_until_due(queue, "status = 'pending'"))


def test_limit_holds_under_overlapping_drains(db_url: str) -> None:
    queues = [make_queue(db_url, jobs_batch_size=2, jobs_db_pool="null") for _ in range(3)]
    try:
        enqueue(queues[0], 12, user="u1", sleep=0.05)
        enqueue(queues[0], 4, user="u2", sleep=0.05)
        drain_together(queues, timeout=100, max_jobs=50)
        q = queues[0]
        assert count(q, "status = 'completed'") == 6
        users = sorted(job.payload["user"] for job in jobs_where(q, "status = 'completed'"))
        assert users == ["u1"] * 3 + ["u2"] * 3
        assert count(q, "status = 'pending' AND attempts = 0") == 10
        assert count(q, "status NOT IN ('pending', 'completed')") == 0
    finally:
        for q in queues:
            q.engine.dispose()


def test_settings_limit_a_builtin_type(db_url: str, aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_EMAIL_FROM", "no-reply@example.com")
    get_settings.cache_clear()
    aws.client("ses", "us-east-1").verify_email_identity(EmailAddress="no-reply@example.com")
    q = make_queue(db_url, jobs_rate_limits="email.ses=2/hour")
    try:
        mail = {"to": ["a@example.com"], "subject": "hi", "text": "x"}
        q.enqueue_many([JobSpec(type="email.ses", payload={**mail, "userId": 7}) for _ in range(3)])
        q.enqueue_many([JobSpec(type="email.ses", payload={**mail, "userId": "other"}) for _ in range(1)])
        summary = q.drain(max_jobs=10)
        assert (summary.succeeded, summary.retried) == (3, 1)
        assert aws.client("ses", "us-east-1").get_send_quota()["SentLast24Hours"] == 3
    finally:
        q.engine.dispose()
        get_settings.cache_clear()


def test_tenant_enqueue_quota(db_url: str) -> None:
    q = make_queue(db_url, jobs_tenant_enqueue_limit="3/hour")
    try:
        for _ in range(3):
            q.submit(JobSpec(type="noop"), tenant="acme")
        with pytest.raises(RateLimited) as err:
            q.submit(JobSpec(type="noop"), tenant="acme")
        assert 3590 <= err.value.retry_after <= 3600
        assert err.value.code == "rate_limited" and err.value.details == {
            "retryAfterSeconds": err.value.retry_after
        }
        # Batches are all or nothing.
        q.submit_many([JobSpec(type="noop", tenant_id="beta") for _ in range(2)])
        with pytest.raises(RateLimited):
            q.submit_many([JobSpec(type="noop", tenant_id="beta") for _ in range(2)])
        with pytest.raises(RateLimited) as err:
            q.submit_many([JobSpec(type="noop", tenant_id="gamma") for _ in range(4)])
        assert err.value.retry_after == 3600
        # Jobs without a tenant are not limited.
        q.enqueue_many([JobSpec(type="noop") for _ in range(10)])
        assert count(q, "tenant_id = 'acme'") == 3
        assert count(q, "tenant_id = 'beta'") == 2
        assert count(q, "tenant_id = 'gamma'") == 0
        assert count(q, "tenant_id IS NULL") == 10
    finally:
        q.engine.dispose()


def test_tenant_quota_holds_under_concurrent_enqueues(db_url: str) -> None:
    """The quota's count and the insert hold together (one transaction, its lock), so 16
    simultaneous enqueues for one tenant under a quota of 5 make exactly 5 jobs."""
    queues = [make_queue(db_url, jobs_tenant_enqueue_limit="5/hour", jobs_db_pool="null") for _ in range(16)]
    barrier = threading.Barrier(len(queues))
    outcomes: list[str] = []

    def enqueue_one(q: Queue) -> None:
        barrier.wait()
        try:
            q.submit(JobSpec(type="noop"), tenant="acme")
            outcomes.append("created")
        except RateLimited:
            outcomes.append("limited")

    threads = [threading.Thread(target=enqueue_one, args=(q,)) for q in queues]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert sorted(outcomes) == ["created"] * 5 + ["limited"] * 11
        assert count(queues[0], "tenant_id = 'acme'") == 5
    finally:
        for q in queues:
            q.engine.dispose()
