"""The drain's clock: a hung handler is given up on at its timeout, and a drain stops starting
jobs when its time budget would run out, handing the unstarted ones back uncounted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lib import JobSpec, Queue, Registry
from lib.config import Settings
from lib.db import make_engine
from tests.support.clock import FakeClock
from tests.support.db import count
from tests.support.polling import wait_for


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


@pytest.fixture
def timed(db_url: str) -> Iterator[tuple[Queue, FakeClock, threading.Event]]:
    """A queue whose drains spend their budget on a fake clock: a ``spend`` job moves it on by
    its ``seconds`` and takes no real time; a ``block`` job runs until the test sets the event."""
    clock, release = FakeClock(), threading.Event()
    types = Registry()

    @types.job("spend")
    def spend(payload: dict[str, float]) -> None:
        clock.advance(payload["seconds"])

    @types.job("block", timeout=30)
    def block(payload: dict[str, float]) -> str:
        assert release.wait(30)
        return "released"

    queue = Queue(make_engine(db_url), Settings(database_url=db_url), types)
    queue.drainer.clock = clock
    yield queue, clock, release
    release.set()
    queue.engine.dispose()


def test_budget_stops_starting_jobs_and_releases_the_rest(timed: tuple[Queue, FakeClock, Any]) -> None:
    queue, _, _ = timed
    queue.enqueue_many([JobSpec(type="spend", payload={"seconds": 0.4}) for _ in range(6)])

    summary = queue.drain(max_jobs=100, budget_ms=1500)

    # 0.4, 0.8, 1.2 s spent leave room for a fourth; after it (1.6 s) nothing more starts.
    assert (summary.stopped_by, summary.processed, summary.succeeded) == ("budget", 4, 4)
    assert count(queue, "status = 'completed' AND attempts = 1") == 4
    # Claimed but never started: back to pending, the claim's attempt refunded, no lease left.
    assert count(queue, "status = 'pending' AND attempts = 0 AND started_at IS NULL") == 2
    assert count(queue, "claim_token IS NOT NULL OR lease_expires_at IS NOT NULL") == 0
    assert summary.remaining == 2
    last = queue.status().last_drain
    assert last is not None and (last.stopped_by, last.processed) == ("budget", 4)


def test_next_drain_picks_up_what_the_budget_left(timed: tuple[Queue, FakeClock, Any]) -> None:
    queue, _, _ = timed
    queue.enqueue_many([JobSpec(type="spend", payload={"seconds": 2.0}) for _ in range(4)])
    first = queue.drain(budget_ms=3000)  # 2 s spent: a second job still fits, then 4 s: stop
    second = queue.drain(budget_ms=10_000)
    assert (first.stopped_by, first.processed) == ("budget", 2)
    assert (second.stopped_by, second.processed) == ("empty", 2)
    assert count(queue, "status = 'completed' AND attempts = 1") == 4


def test_a_job_longer_than_the_budget_keeps_its_lease_and_records_itself_late(
    timed: tuple[Queue, FakeClock, threading.Event],
) -> None:
    """The drain answers when its budget ends, not when a long job's timeout would; the job
    keeps its lease (no outcome, no release) and writes its own outcome when it finishes. The
    job cannot finish before the drain has answered: it waits for the test to release it."""
    queue, _, release = timed
    long = queue.enqueue("block", {}, priority=5)
    after = queue.enqueue("spend", {"seconds": 0})

    summary = queue.drain(max_jobs=10, budget_ms=300)

    assert (summary.processed, summary.stopped_by) == (0, "budget")
    running = queue.get(long.id)
    assert (running.status, running.attempts) == ("processing", 1)
    released = queue.get(after.id)
    assert (released.status, released.attempts) == ("pending", 0)

    release.set()
    wait_for(lambda: queue.get(long.id).status != "processing", what="the job to record itself")
    done = queue.get(long.id)
    assert (done.status, done.attempts, done.result) == ("completed", 1, "released")
    assert count(queue, "claim_token IS NOT NULL OR lease_expires_at IS NOT NULL") == 0
