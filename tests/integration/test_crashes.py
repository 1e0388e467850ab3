"""Failures: a worker killed mid-job, a poison job in a batch, and when a failed job is due again."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

from lib import JobSpec, Queue
from tests import workers
from tests.support.db import count, db_now, expired_leases, make_queue
from tests.support.polling import wait_for


def started_by(path: Path) -> dict[str, int]:
    """job id → pid of the process whose handler started it (first attempt's line)."""
    if not path.exists():
        return {}
    lines = [line.split() for line in path.read_text().splitlines()]
    return {job_id: int(pid) for job_id, attempt, pid in lines if attempt == "1"}


def test_sigkilled_worker_job_is_retried_or_dead_lettered(db_url: str, tmp_path: Path) -> None:
    """Two workers are SIGKILLed while their handlers run. The jobs stay `processing` until their
    lease (timeout 2 s + grace 0) ends; then a drain retries the one with attempts left (which
    succeeds on attempt 2) and dead-letters the one with maxAttempts=1."""
    queue = make_queue(db_url, jobs_lease_grace_seconds=0)
    path = tmp_path / "runs.log"
    retry = queue.enqueue("test.block", {"file": str(path)}, max_attempts=2, timeout_seconds=2)
    dead = queue.enqueue("test.block", {"file": str(path)}, max_attempts=1, timeout_seconds=2)
    overrides = {"jobs_lease_grace_seconds": 0}
    procs = [workers.start(workers.drain_once, db_url, overrides, 1) for _ in range(2)]
    try:
        # Kill each worker the moment its handler has started (it wrote its line), well inside
        # the 2 s after which its own drain would give up on the handler.
        killed: set[int] = set()

        def kill_started() -> bool:
            for pid in set(started_by(path).values()) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            return len(killed) == 2

        wait_for(kill_started, what="both handlers to start")
        for proc in procs:
            proc.join(10)
            assert proc.exitcode == -signal.SIGKILL
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert set(started_by(path)) == {retry.id, dead.id}
    assert count(queue, "status = 'processing' AND attempts = 1 AND claim_token IS NOT NULL") == 2

    # (test_fencing checks that a live lease is never reclaimed; here we wait it out.)
    wait_for(lambda: expired_leases(queue) == 2, seconds=10, what="the leases to expire")
    summary = queue.drain()

    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (1, 1, 1, 1)
    again = queue.get(retry.id)
    assert (again.status, again.attempts, again.result) == ("completed", 2, {"attempt": 2})
    assert "lease" in (again.last_error or "")
    gone = queue.get(dead.id)
    assert (gone.status, gone.attempts) == ("failed", 1)
    assert "lease" in (gone.last_error or "")
    runs = [line.split() for line in path.read_text().splitlines()]
    assert sorted((job_id, attempt) for job_id, attempt, _ in runs) == sorted(
        [(retry.id, "1"), (retry.id, "2"), (dead.id, "1")]
    )
    assert count(queue, "claim_token IS NOT NULL OR lease_expires_at IS NOT NULL") == 0
    queue.engine.dispose()


def test_poison_job_does_not_stop_the_batch(queue: Queue) -> None:
    poison = queue.enqueue(
        "test.fail", {}, priority=10, max_attempts=3, backoff={"strategy": "fixed", "delaySeconds": 0}
    )
    good = queue.enqueue_many([JobSpec(type="test.greet", payload={"name": f"n{i}"}) for i in range(5)])

    # maxJobs=6 is the batch: the poison job (due again at once, delay 0) waits for the next drain.
    first = queue.drain(max_jobs=6)
    assert (first.processed, first.succeeded, first.retried, first.failed) == (6, 5, 1, 0)
    assert all(queue.get(job.id).status == "completed" for job in good)
    assert (queue.get(poison.id).status, queue.get(poison.id).attempts) == ("pending", 1)
    second = queue.drain(max_jobs=1)
    assert (second.processed, second.retried, second.failed) == (1, 1, 0)
    assert (queue.get(poison.id).status, queue.get(poison.id).attempts) == ("pending", 2)
    third = queue.drain(max_jobs=1)
    assert (third.processed, third.retried, third.failed) == (1, 0, 1)
    dead = queue.get(poison.id)
    assert (dead.status, dead.attempts, dead.last_error) == ("failed", 3, "RuntimeError: boom")
    assert queue.drain().processed == 0
    assert count(queue, "status = 'completed'") == 5


def test_exponential_backoff_is_jittered_below_its_ceiling(queue: Queue) -> None:
    backoff = {"strategy": "exponential", "delaySeconds": 10, "maxDelaySeconds": 3600}
    ids = [queue.enqueue("test.fail", {}, backoff=backoff).id for _ in range(20)]
    before = db_now(queue)
    # maxJobs 20: a retry jittered to ~0 s must not be claimed again by the same drain.
    assert queue.drain(max_jobs=20).retried == 20
    after = db_now(queue)
    due = [queue.get(job_id).run_at for job_id in ids]
    # First failure: full jitter in [0, 10 s] from the moment the outcome was recorded.
    assert all(before <= run_at <= after + timedelta(seconds=10) for run_at in due), (before, after, due)
    spread = max(due) - min(due)
    assert spread > timedelta(seconds=1), "no jitter"


def test_fixed_backoff_is_exact(queue: Queue) -> None:
    job = queue.enqueue("test.fail", {}, backoff={"strategy": "fixed", "delaySeconds": 30})
    before = db_now(queue)
    queue.drain()
    after = db_now(queue)
    run_at = queue.get(job.id).run_at
    slack = timedelta(milliseconds=50)
    assert before + timedelta(seconds=30) - slack <= run_at <= after + timedelta(seconds=30) + slack
    assert queue.drain().processed == 0  # not due yet


def test_unstorable_outcomes_fail_alone_not_the_batch(queue: Queue) -> None:
    """An infinite RetryLater delay, U+0000 or a lone surrogate in a result or an error message:
    PostgreSQL would refuse the batch's one outcome statement and lose every outcome in it (the
    good jobs would run again after their lease). Each must end in a state of its own."""
    kinds = ["retry-forever", "retry-far", "nul-result", "surrogate-result", "nul-error", "surrogate-error"]
    odd = {kind: queue.enqueue("test.odd", {"kind": kind}, priority=1).id for kind in kinds}
    good = [job.id for job in queue.enqueue_many([JobSpec(type="noop") for _ in range(3)])]
    before = db_now(queue)

    summary = queue.drain(max_jobs=len(kinds) + 3)

    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (9, 3, 4, 2)
    assert all(queue.get(job_id).status == "completed" for job_id in good)
    for kind in ("retry-forever", "retry-far"):
        later = queue.get(odd[kind])
        # Capped at ten years, and the RetryLater attempt is not counted.
        assert (later.status, later.attempts) == ("pending", 0)
        assert before + timedelta(days=3649) < later.run_at < before + timedelta(days=3651)
    for kind in ("nul-result", "surrogate-result"):
        refused = queue.get(odd[kind])
        assert (refused.status, refused.result) == ("failed", None)
        assert (refused.last_error or "").startswith("result is not JSON-serialisable: it contains")
    assert queue.get(odd["nul-error"]).last_error == "RuntimeError: bad\ufffdbyte"
    assert queue.get(odd["surrogate-error"]).last_error == "RuntimeError: x?"
    assert count(queue, "status = 'processing' OR claim_token IS NOT NULL") == 0
