"""The drain's clock: a hung handler is given up on at its timeout, and a drain stops starting
jobs when its time budget would run out, handing the unstarted ones back uncounted."""

from __future__ import annotations

import time

from lib import JobSpec, Queue
from tests.support.db import count


def test_hung_handler_is_abandoned_at_its_timeout(queue: Queue) -> None:
    first = queue.enqueue("noop", {}, priority=10)
    hung = queue.enqueue("test.sleep", {"seconds": 30}, priority=5, timeout_seconds=1)
    rest = queue.enqueue_many([JobSpec(type="noop") for _ in range(2)])

    started = time.monotonic()
    summary = queue.drain(max_jobs=10)
    took = time.monotonic() - started

    assert 1.0 <= took < 10, f"drain took {took:.1f}s"
    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (4, 3, 1, 0)
    # The jobs after the hung one (same batch) still ran.
    assert all(queue.get(job.id).status == "completed" for job in [first, *rest])
    stuck = queue.get(hung.id)
    assert (stuck.status, stuck.attempts, stuck.last_error) == ("pending", 1, "timed out after 1s")
    assert count(queue, "claim_token IS NOT NULL OR lease_expires_at IS NOT NULL") == 0


def test_hung_handler_on_its_last_attempt_fails(queue: Queue) -> None:
    hung = queue.enqueue("test.sleep", {"seconds": 30}, timeout_seconds=1, max_attempts=1)
    summary = queue.drain()
    assert (summary.processed, summary.retried, summary.failed) == (1, 0, 1)
    dead = queue.get(hung.id)
    assert (dead.status, dead.attempts, dead.last_error) == ("failed", 1, "timed out after 1s")


def test_budget_stops_starting_jobs_and_releases_the_rest(queue: Queue) -> None:
    queue.enqueue_many([JobSpec(type="test.sleep", payload={"seconds": 0.5}) for _ in range(6)])

    started = time.monotonic()
    summary = queue.drain(max_jobs=100, budget_ms=1500)
    took = time.monotonic() - started

    assert summary.stopped_by == "budget"
    assert 1 <= summary.processed <= 3
    assert summary.succeeded == summary.processed
    assert took < 5, f"drain took {took:.1f}s for a 1.5 s budget"
    done = count(queue, "status = 'completed' AND attempts = 1")
    assert done == summary.processed
    # Claimed but never started: back to pending, the claim's attempt refunded, no lease left.
    left = 6 - summary.processed
    assert count(queue, "status = 'pending' AND attempts = 0 AND started_at IS NULL") == left
    assert count(queue, "claim_token IS NOT NULL OR lease_expires_at IS NOT NULL") == 0
    assert summary.remaining == left
    last = queue.status().last_drain
    assert last is not None and (last.stopped_by, last.processed) == ("budget", summary.processed)


def test_next_drain_picks_up_what_the_budget_left(queue: Queue) -> None:
    queue.enqueue_many([JobSpec(type="test.sleep", payload={"seconds": 0.2}) for _ in range(4)])
    first = queue.drain(budget_ms=300)
    second = queue.drain(budget_ms=10_000)
    assert first.stopped_by == "budget" and second.stopped_by == "empty"
    assert first.processed + second.processed == 4
    assert count(queue, "status = 'completed' AND attempts = 1") == 4


def test_a_job_longer_than_the_budget_keeps_its_lease_and_records_itself_late(queue: Queue) -> None:
    """The drain answers when its budget ends, not when a long job's timeout would; the job
    keeps its lease (no outcome, no release) and writes its own outcome when it finishes."""
    long = queue.enqueue("test.sleep", {"seconds": 1.5}, priority=5, timeout_seconds=30)
    after = queue.enqueue("noop", {})

    started = time.monotonic()
    summary = queue.drain(max_jobs=10, budget_ms=300)
    took = time.monotonic() - started

    assert took < 1.2, f"drain waited {took:.1f}s for a job past its budget"
    assert (summary.processed, summary.stopped_by) == (0, "budget")
    running = queue.get(long.id)
    assert (running.status, running.attempts) == ("processing", 1)
    released = queue.get(after.id)
    assert (released.status, released.attempts) == ("pending", 0)

    deadline = time.monotonic() + 10
    while queue.get(long.id).status == "processing" and time.monotonic() < deadline:
        time.sleep(0.05)
    done = queue.get(long.id)
    assert (done.status, done.attempts, done.result) == ("completed", 1, "slept")
    assert count(queue, "claim_token IS NOT NULL OR lease_expires_at IS NOT NULL") == 0
