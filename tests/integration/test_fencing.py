"""Leases and fencing: a worker whose lease expired and was taken over changes nothing.

Step by step with the store functions a drain uses, then once through two real drains.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import sqlalchemy as sa

from lib import Queue
from lib.schema import jobs
from lib.store import claim
from lib.store.claim import Outcome
from lib.store.clock import now_plus
from tests.jobtypes import GATES
from tests.support.db import count
from tests.support.polling import wait_for


def row(queue: Queue, job_id: uuid.UUID | str) -> dict[str, Any]:
    """Every column of a job, straight from the table (claim token and lease included)."""
    with queue.engine.connect() as conn:
        found = conn.execute(sa.select(jobs).where(jobs.c.id == uuid.UUID(str(job_id)))).one()
    return dict(found._mapping)


def expire_leases(queue: Queue) -> None:
    """Move every lease a minute into the past, by the database clock."""
    with queue.engine.begin() as conn:
        stmt = sa.update(jobs).where(jobs.c.status == "processing")
        conn.execute(stmt.values(lease_expires_at=now_plus(queue.dialect, -60)))


def claim_one(queue: Queue, token: uuid.UUID) -> list[claim.Claimed]:
    with queue.engine.begin() as conn:
        return claim.claim_batch(conn, 10, token, 30)


NOTHING = claim.Recorded(succeeded=0, retried=0, failed_ids=[])


def test_stale_worker_is_fenced_out_after_takeover(queue: Queue) -> None:
    job = queue.enqueue("noop", {}, max_attempts=3)
    token_a, token_b = uuid.uuid4(), uuid.uuid4()

    (held,) = claim_one(queue, token_a)
    assert held.attempt == 1
    assert row(queue, job.id)["claim_token"] == token_a

    # Worker A hangs past its lease; the next drain reclaims the job.
    expire_leases(queue)
    with queue.engine.begin() as conn:
        reclaimed = claim.reclaim_expired(conn)
    assert (reclaimed.retried, reclaimed.failed_ids) == (1, [])
    back = row(queue, job.id)
    assert (back["status"], back["attempts"], back["claim_token"]) == ("pending", 1, None)
    assert "lease" in back["last_error"]

    (taken,) = claim_one(queue, token_b)
    assert (taken.id, taken.attempt) == (held.id, 2)
    before = row(queue, job.id)
    assert (before["status"], before["claim_token"]) == ("processing", token_b)

    # Worker A wakes up and reports: every write is fenced on its (lost) token.
    with queue.engine.begin() as conn:
        stale = [Outcome(held.id, "completed", result='"stale"')]
        assert claim.record_outcomes(conn, token_a, stale) == NOTHING
        assert claim.set_progress(conn, token_a, held.id, 99) is False
        assert claim.release(conn, token_a, [held.id]) == 0
        failed = [Outcome(held.id, "failed", error="stale")]
        assert claim.record_outcomes(conn, token_a, failed) == NOTHING
    assert row(queue, job.id) == before

    # The current holder's writes do land (the fence is the token, not a blanket refusal).
    with queue.engine.begin() as conn:
        assert claim.set_progress(conn, token_b, held.id, 40) is True
        current = [Outcome(held.id, "completed", result='"b"')]
        assert claim.record_outcomes(conn, token_b, current) == claim.Recorded(1, 0, [])
    done = queue.get(job.id)
    assert (done.status, done.attempts, done.result) == ("completed", 2, "b")
    # Its progress write landed (a completed job then reads as 100 whatever was stored).
    assert row(queue, job.id)["progress"] == 40 and done.progress == 100


def test_released_jobs_are_fenced_too(queue: Queue) -> None:
    """release() with a stale token must not hand back a job someone else now holds."""
    job = queue.enqueue("noop", {})
    token_a, token_b = uuid.uuid4(), uuid.uuid4()
    claim_one(queue, token_a)
    expire_leases(queue)
    with queue.engine.begin() as conn:
        claim.reclaim_expired(conn)
    claim_one(queue, token_b)
    with queue.engine.begin() as conn:
        assert claim.release(conn, token_a, [uuid.UUID(job.id)]) == 0
        assert claim.release(conn, token_b, [uuid.UUID(job.id)]) == 1
    back = row(queue, job.id)
    # Released = never started: the attempt is uncounted (2 claims, 1 released).
    assert (back["status"], back["attempts"], back["claim_token"]) == ("pending", 1, None)


def test_lease_expired_without_attempts_left_fails(queue: Queue) -> None:
    job = queue.enqueue("noop", {}, max_attempts=1)
    other = queue.enqueue("noop", {}, max_attempts=1, delay_seconds=3600)
    claim_one(queue, uuid.uuid4())
    expire_leases(queue)
    alerted: list[list[uuid.UUID]] = []
    queue.drainer.on_failed = lambda _conn, ids: alerted.append(list(ids))

    summary = queue.drain()

    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (0, 0, 0, 1)
    dead = row(queue, job.id)
    assert (dead["status"], dead["attempts"], dead["claim_token"]) == ("failed", 1, None)
    assert dead["finished_at"] is not None and dead["lease_expires_at"] is None
    assert "lease" in dead["last_error"]
    assert [str(i) for i in alerted[0]] == [job.id]
    assert row(queue, other.id)["status"] == "pending"


def test_live_lease_is_not_reclaimed(queue: Queue) -> None:
    job = queue.enqueue("noop", {})
    claim_one(queue, uuid.uuid4())
    summary = queue.drain()
    assert (summary.processed, summary.retried, summary.failed) == (0, 0, 0)
    assert row(queue, job.id)["status"] == "processing"


def test_drain_whose_lease_was_taken_over_records_nothing(queue: Queue) -> None:
    """Two real drains: A's handler outlives its lease, B takes the job over and finishes it;
    A's late result is dropped and A's summary doesn't count it as a success."""
    name = f"fence-{uuid.uuid4()}"
    gate = GATES[name] = threading.Event()
    job = queue.enqueue("test.gate", {"gate": name})
    summaries: dict[str, Any] = {}
    drain_a = threading.Thread(target=lambda: summaries.setdefault("a", queue.drain(max_jobs=1)))
    drain_a.start()
    try:
        wait_for(lambda: count(queue, "status = 'processing'") == 1)
        expire_leases(queue)
        summary_b = queue.drain(max_jobs=1)
    finally:
        gate.set()
        drain_a.join(30)
    assert (summary_b.retried, summary_b.processed, summary_b.succeeded) == (1, 1, 1)
    summary_a = summaries["a"]
    assert (summary_a.processed, summary_a.succeeded, summary_a.retried, summary_a.failed) == (1, 0, 0, 0)
    done = queue.get(job.id)
    assert (done.status, done.attempts, done.result) == ("completed", 2, {"attempt": 2})
    assert count(queue, "claim_token IS NULL AND lease_expires_at IS NULL") == 1
