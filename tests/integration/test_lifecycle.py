"""The execution lifecycle under serverless conditions, with real processes: a drain SIGKILLed
mid-batch replays only what was in flight or unflushed, jobs late in a held batch are never
reclaimed, and what a handler raises or a deployment lacks is a counted attempt."""

from __future__ import annotations

import logging
import math
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lib import JobSpec, Queue
from lib.drain import FLUSH_SECONDS, Leases, abandoned_threads
from lib.schema import jobs
from lib.store import claim
from lib.store.claim import Outcome, Recorded
from lib.store.clock import now_plus
from tests import workers
from tests.jobtypes import GATES
from tests.support.db import count, db_now, expired_leases, make_queue
from tests.support.polling import wait_for

NO_RETRY_SOON = {"strategy": "fixed", "delaySeconds": 600}


def runs(path: Path) -> list[list[str]]:
    """The '<job id> <attempt> <pid>' lines test.record wrote, in order."""
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def drain_to_empty(queue: Queue) -> None:
    while queue.drain(max_jobs=100).processed:
        pass


# -- a drain killed mid-batch ---------------------------------------------------------------------


JOBS, JOB_SECONDS = 16, 0.15
# In flight (1) + jobs that finished within the last flush window + one for the flush's own time.
MOST_REPLAYED = 1 + math.ceil(FLUSH_SECONDS / JOB_SECONDS) + 1


@pytest.mark.parametrize("kill_after", [1, 6, 15], ids=["first-job", "mid-batch", "last-job"])
def test_sigkilled_drain_replays_only_jobs_in_flight_or_unflushed(
    db_url: str, tmp_path: Path, kill_after: int
) -> None:
    """One drain process holds a batch of 16 jobs of 0.15 s and is SIGKILLed once the
    ``kill_after``-th has started. Every job that finished more than a flush window before the
    kill is already recorded; after the leases run out, the next drain runs only the others, so
    each job is delivered once, and only those in flight or unflushed at the kill twice."""
    overrides = {"jobs_lease_grace_seconds": 1}
    queue = make_queue(db_url, **overrides)
    path = tmp_path / "runs.log"
    payload = {"file": str(path), "seconds": JOB_SECONDS}
    specs = [JobSpec(type="test.record", payload=payload, timeout_seconds=1) for _ in range(JOBS)]
    ids = {job.id for job in queue.enqueue_many(specs)}
    proc = workers.start(workers.drain_once, db_url, overrides, 100)
    try:
        wait_for(lambda: len(runs(path)) >= kill_after, what=f"job {kill_after} to start")
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()

    started = len(runs(path))
    recorded = count(queue, "status = 'completed' AND attempts = 1 AND claim_token IS NULL")
    unrecorded = started - recorded
    assert 1 <= unrecorded <= MOST_REPLAYED, (started, recorded)
    # Nothing else changed: the rest is still held by the dead drain's leases.
    assert count(queue, "status = 'processing' AND claim_token IS NOT NULL") == JOBS - recorded

    wait_for(lambda: expired_leases(queue) == JOBS - recorded, seconds=15, what="the leases to expire")
    drain_to_empty(queue)

    deliveries = Counter(job_id for job_id, _, _ in runs(path))
    assert set(deliveries) == ids
    assert count(queue, "status = 'completed'") == JOBS
    assert sorted(deliveries.values(), reverse=True) == [2] * unrecorded + [1] * (JOBS - unrecorded)
    queue.engine.dispose()


# -- jobs late in a held batch ------------------------------------------------------------------------


def test_jobs_late_in_a_held_batch_are_never_reclaimed(db_url: str, tmp_path: Path) -> None:
    """8 jobs of 0.6 s, timeout 1 s, grace 1 s: one drain claims all 8 (≈5 s of work, far past
    any lease set at claim time) while two other drain processes keep calling. Each job is
    delivered once and completes on attempt 1, those with maxAttempts 1 included."""
    overrides = {"jobs_lease_grace_seconds": 1}
    queue = make_queue(db_url, **overrides)
    path = tmp_path / "runs.log"
    payload = {"file": str(path), "seconds": 0.6}
    specs = [
        JobSpec(type="test.record", payload=payload, timeout_seconds=1, max_attempts=1 + i % 2)
        for i in range(8)
    ]
    ids = {job.id for job in queue.enqueue_many(specs)}
    holder = workers.start(workers.drain_once, db_url, overrides, 8)
    others: list[Any] = []
    try:
        wait_for(lambda: count(queue, "status = 'processing'") == 8, what="one drain to claim all 8")
        others = [workers.start(workers.drain_for, db_url, overrides, 6.5, 8) for _ in range(2)]
        holder.join(30)
        for proc in others:
            proc.join(30)
        assert [proc.exitcode for proc in (holder, *others)] == [0, 0, 0]
    finally:
        for proc in (holder, *others):
            if proc.is_alive():
                proc.kill()

    deliveries = Counter(job_id for job_id, _, _ in runs(path))
    assert deliveries == dict.fromkeys(ids, 1)
    assert count(queue, "status = 'completed' AND attempts = 1 AND last_error IS NULL") == 8
    queue.engine.dispose()


# -- leases: held while waiting, set at start -------------------------------------------------------


def lease_left(queue: Queue, job_id: str) -> float:
    """Seconds until the job's lease runs out, by the database clock."""
    with queue.engine.connect() as conn:
        lease = conn.execute(
            sa.select(jobs.c.lease_expires_at).where(jobs.c.id == uuid.UUID(job_id))
        ).scalar_one()
    return float((lease - db_now(queue)).total_seconds())


def test_a_long_job_is_leased_for_its_whole_timeout_from_its_start(queue: Queue) -> None:
    """Timeout 300 s, grace 30 s: a claimed job waiting its turn is held for 120 + 30 s (a dead
    drain gives it back that soon); the one that started is leased for 300 + 30 s from its start."""
    gates = {
        name: GATES.setdefault(name, threading.Event()) for name in (f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}")
    }
    first, second = (
        queue.enqueue("test.gate", {"gate": name}, timeout_seconds=300, priority=9 - i)
        for i, name in enumerate(gates)
    )
    drain = threading.Thread(target=queue.drain, kwargs={"max_jobs": 2})
    drain.start()
    try:
        wait_for(lambda: count(queue, "status = 'processing'") == 2, what="the claim")
        wait_for(lambda: lease_left(queue, first.id) > 320, seconds=5, what="the start write")
        assert 320 < lease_left(queue, first.id) <= 330
        assert 140 < lease_left(queue, second.id) <= 150
    finally:
        for gate in gates.values():
            gate.set()
        drain.join(30)
    assert count(queue, "status = 'completed' AND attempts = 1") == 2


def test_a_job_taken_over_before_it_starts_is_not_run(
    queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a batch's leases may have lapsed (renewals late), a job's start write is fenced:
    one another drain took meanwhile is skipped, neither run nor recorded by this drain."""
    monkeypatch.setattr(Leases, "cover", lambda self, job, at: False)  # every start writes
    name = f"hold-{uuid.uuid4()}"
    gate = GATES[name] = threading.Event()
    path = tmp_path / "runs.log"
    held = queue.enqueue("test.gate", {"gate": name}, priority=9)
    taken = queue.enqueue("test.record", {"file": str(path)})
    summaries: list[Any] = []
    drain = threading.Thread(target=lambda: summaries.append(queue.drain(max_jobs=2)))
    drain.start()
    try:
        wait_for(lambda: count(queue, "status = 'processing'") == 2, what="the claim")
        with queue.engine.begin() as conn:  # the lease ran out; another drain reclaims and claims it
            stmt = sa.update(jobs).where(jobs.c.id == uuid.UUID(taken.id))
            conn.execute(stmt.values(lease_expires_at=now_plus(queue.dialect, -60)))
            assert claim.reclaim_expired(conn).retried == 1
            assert [job.id for job in claim.claim_batch(conn, 10, uuid.uuid4(), 30)] == [uuid.UUID(taken.id)]
    finally:
        gate.set()
        drain.join(30)
    assert runs(path) == []
    assert (summaries[0].processed, summaries[0].succeeded) == (1, 1)
    assert queue.get(held.id).status == "completed"
    assert (queue.get(taken.id).status, queue.get(taken.id).attempts) == ("processing", 2)


# -- what a handler raises, what a deployment lacks ---------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [("exit", "SystemExit: 3"), ("interrupt", "KeyboardInterrupt"), ("cancelled", "CancelledError")],
)
def test_a_base_exception_from_a_handler_is_a_failed_attempt(queue: Queue, kind: str, error: str) -> None:
    """SystemExit, KeyboardInterrupt and a cancelled asyncio task count an attempt like any
    error; the rest of the batch runs on."""
    retried = queue.enqueue("test.base_exception", {"kind": kind}, priority=9, backoff=NO_RETRY_SOON)
    dead = queue.enqueue("test.base_exception", {"kind": kind}, priority=8, max_attempts=1)
    after = queue.enqueue("noop", {})

    summary = queue.drain(max_jobs=10)

    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (3, 1, 1, 1)
    again = queue.get(retried.id)
    assert (again.status, again.attempts, again.last_error) == ("pending", 1, error)
    gone = queue.get(dead.id)
    assert (gone.status, gone.attempts, gone.last_error) == ("failed", 1, error)
    assert queue.get(after.id).status == "completed"
    assert count(queue, "claim_token IS NOT NULL") == 0


def test_a_handler_calling_sys_exit_does_not_end_the_drain_process(db_url: str) -> None:
    queue = make_queue(db_url)
    job = queue.enqueue("test.base_exception", {"kind": "exit"}, backoff=NO_RETRY_SOON)
    after = queue.enqueue("noop", {})
    proc = workers.start(workers.drain_once, db_url, {}, 10)
    proc.join(60)
    assert proc.exitcode == 0
    again = queue.get(job.id)
    assert (again.status, again.attempts, again.last_error) == ("pending", 1, "SystemExit: 3")
    assert queue.get(after.id).status == "completed"
    queue.engine.dispose()


def test_a_type_this_deployment_lacks_is_retried_with_its_backoff(queue: Queue) -> None:
    """A rolling deploy: the job's type is unknown here, maybe not to the next deployment."""
    later = queue.enqueue("noop", {}, backoff={"strategy": "fixed", "delaySeconds": 60})
    last = queue.enqueue("noop", {}, max_attempts=1)
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_jobs SET type = 'billing.invoice'"))

    summary = queue.drain()

    assert (summary.processed, summary.retried, summary.failed) == (2, 1, 1)
    again = queue.get(later.id)
    assert (again.status, again.attempts) == ("pending", 1)
    assert again.last_error is not None
    assert "'billing.invoice'" in again.last_error and "JOBS_HANDLER_MODULES" in again.last_error
    assert again.run_at > again.created_at + _seconds(55)
    gone = queue.get(last.id)
    assert (gone.status, gone.attempts, gone.last_error) == ("failed", 1, again.last_error)


def _seconds(n: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=n)


# -- side effects of outcomes ---------------------------------------------------------------------------


def test_a_failing_alert_hook_never_undoes_outcomes(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    def broken(conn: sa.Connection, ids: list[uuid.UUID]) -> None:
        raise RuntimeError("alert destination exploded")

    queue.drainer.on_failed = broken
    dead = queue.enqueue("test.permanent", {})
    fine = queue.enqueue("noop", {})
    with caplog.at_level(logging.INFO, logger="sluice"):
        summary = queue.drain()
    assert (summary.processed, summary.succeeded, summary.failed) == (2, 1, 1)
    assert queue.get(dead.id).status == "failed"
    assert queue.get(fine.id).status == "completed"
    assert "alert.digest_failed" in caplog.text
    assert count(queue, "claim_token IS NOT NULL") == 0


def test_each_flush_hands_its_outcomes_to_the_flush_hook(queue: Queue) -> None:
    """What a per-attempt history needs: attempt, start and finish, kind, error, traceback."""
    seen: list[tuple[Outcome, Recorded]] = []

    def hook(conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome], recorded: Recorded) -> None:
        seen.extend((outcome, recorded) for outcome in outcomes)

    queue.drainer.on_flush = hook
    fail = queue.enqueue("test.fail", {}, priority=5, backoff=NO_RETRY_SOON)
    done = queue.enqueue("noop", {})
    queue.drain()
    by_id = {str(outcome.id): outcome for outcome, _ in seen}
    failed, completed = by_id[fail.id], by_id[done.id]
    assert (failed.kind, failed.attempt, failed.error) == ("retried", 1, "RuntimeError: boom")
    assert failed.traceback is not None and 'raise RuntimeError("boom")' in failed.traceback
    assert failed.traceback.startswith("Traceback") and "lib/drain.py" not in failed.traceback
    assert (completed.kind, completed.attempt, completed.traceback) == ("completed", 1, None)
    for outcome in (failed, completed):
        assert outcome.started is not None and outcome.finished is not None
        assert outcome.started <= outcome.finished
    job = queue.get(done.id)
    assert job.started_at is not None and job.finished_at is not None
    assert job.started_at <= job.finished_at


def test_an_interrupted_drain_records_what_finished_and_gives_back_the_rest(queue: Queue) -> None:
    """Ctrl-C (or SystemExit) in the drain's own thread stops the drain: what finished is
    recorded, what never started is given back uncounted, the job in flight keeps its lease."""
    calls: list[int] = []

    def interrupt_once(
        conn: sa.Connection, token: uuid.UUID, outcomes: Sequence[Outcome], _: Recorded
    ) -> None:
        calls.append(len(outcomes))
        if len(calls) == 1:
            raise KeyboardInterrupt

    queue.drainer.on_flush = interrupt_once
    jobs = [queue.enqueue("test.sleep", {"seconds": 0.4}, priority=9 - i) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        queue.drain(max_jobs=10)
    first, second, third = (queue.get(job.id) for job in jobs)
    assert (first.status, first.attempts) == ("completed", 1)
    assert (second.status, second.attempts) == ("processing", 1)
    assert (third.status, third.attempts, third.started_at) == ("pending", 0, None)
    assert calls == [1, 1]


# -- abandoned handler threads ----------------------------------------------------------------------------


def test_abandoned_handler_threads_are_bounded_and_counted(
    queue: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hung handlers can't be killed; past the limit a drain stops starting jobs and gives the
    rest back uncounted."""
    monkeypatch.setattr(abandoned_threads, "limit", abandoned_threads.count + 2)
    hung = [
        queue.enqueue("test.sleep", {"seconds": 4}, timeout_seconds=1, priority=9 - i, backoff=NO_RETRY_SOON)
        for i in range(3)
    ]
    with caplog.at_level(logging.INFO, logger="sluice"):
        summary = queue.drain(max_jobs=10)
    assert (summary.processed, summary.retried, summary.stopped_by) == (2, 2, "budget")
    assert [queue.get(job.id).status for job in hung] == ["pending"] * 3
    assert count(queue, "status = 'pending' AND attempts = 0") == 1
    assert '"abandonedThreads":2' in caplog.text
    wait_for(lambda: abandoned_threads.count < abandoned_threads.limit - 1, seconds=10, what="threads to end")


# -- SQLite readers ---------------------------------------------------------------------------------


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path, sqlite_template: Path) -> None:
    """A writer holding SQLite's write lock holds up no reader: get, list, status, the backlog,
    the metrics' snapshot, the schedules."""
    import shutil

    path = tmp_path / "sluice.db"
    shutil.copy(sqlite_template, path)
    queue = make_queue(f"sqlite:///{path}")
    job = queue.enqueue("noop", {})
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE sluice_jobs SET priority = 1")
    try:
        started = time.monotonic()
        assert queue.get(job.id).priority == 0  # the committed state
        assert [j.id for j in queue.list().jobs] == [job.id]
        assert queue.status().counts["pending"] == 1
        assert queue.backlog() == 1
        assert queue.metrics.snapshot().status.ready == 1
        assert queue.schedules.list_schedules() == []
        assert time.monotonic() - started < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        queue.engine.dispose()
