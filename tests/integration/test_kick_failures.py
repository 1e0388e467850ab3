"""A kick that fails (nobody listens) or is refused (401) loses nothing: the enqueue answered 201
at once, the job waits pending, and the next cron drain runs it. Kicks follow commits only."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from api._state import app_state
from api.index import create_app
from lib import Queue
from lib.kick import Kicker
from tests.e2e.appserver import ADMIN_KEY, free_port, serve_app, settings_for
from tests.support.db import make_queue


def wait_answered(kicker: Kicker, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while kicker.in_flight_since is not None:
        assert time.monotonic() < deadline, "the kick never came back"
        time.sleep(0.01)


def enqueue_with_kick_to(db_url: str, base: str) -> tuple[Queue, str]:
    """POST /api/jobs on an app whose kicks go to ``base``; (its queue, the job id)."""
    app = create_app(settings_for(db_url, jobs_public_url=base))
    queue = app_state(app).queue
    assert queue.kicker is not None
    response = app.test_client().post("/api/jobs", json={"type": "noop"}, headers={"x-api-key": ADMIN_KEY})
    assert response.status_code == 201
    assert queue.kicker.started == 1
    wait_answered(queue.kicker)
    return queue, response.get_json()["id"]


def assert_nothing_lost(queue: Queue, job_id: str) -> None:
    job = queue.get(job_id)
    assert (job.status, job.attempts) == ("pending", 0)
    assert queue.status().last_drain is None  # no drain ran
    summary = queue.drain(source="cron")
    assert (summary.processed, summary.succeeded) == (1, 1)
    assert queue.get(job_id).status == "completed"
    queue.engine.dispose()


def test_a_kick_nobody_answers_loses_nothing(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="sluice.kick"):
        queue, job_id = enqueue_with_kick_to(db_url, f"http://127.0.0.1:{free_port()}")
    assert '"event":"kick.failed","outcome":"ConnectionRefusedError"' in caplog.text
    assert_nothing_lost(queue, job_id)


def test_a_refused_kick_loses_nothing(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # Another deployment (its own admin key) refuses our credential: 401.
    with serve_app(settings_for(db_url, jobs_api_keys="someone-else")) as other:
        with caplog.at_level("WARNING", logger="sluice.kick"):
            queue, job_id = enqueue_with_kick_to(db_url, other)
    assert '"outcome":"HTTP 401"' in caplog.text
    assert_nothing_lost(queue, job_id)


class Counting:
    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


@pytest.fixture
def counted(db_url: str) -> Iterator[tuple[Queue, Counting]]:
    queue = make_queue(db_url)
    counter = Counting()
    queue.kicker = counter  # type: ignore[assignment]  # only kick() is called
    yield queue, counter
    queue.engine.dispose()


def test_only_ready_jobs_kick_and_a_callers_transaction_kicks_on_commit(
    counted: tuple[Queue, Counting],
) -> None:
    queue, counter = counted
    queue.enqueue("noop", delay_seconds=60)
    assert counter.kicks == 0
    queue.enqueue("noop")
    assert counter.kicks == 1
    queue.enqueue("noop", idempotency_key="once")
    queue.enqueue("noop", idempotency_key="once")  # nothing new: no kick
    assert counter.kicks == 2
    with queue.engine.connect() as conn:
        conn.begin()
        queue.enqueue("noop", conn=conn)
        assert counter.kicks == 2  # not committed yet: a drain would not see it
        conn.rollback()
        conn.begin()
        queue.enqueue("noop", conn=conn)
        conn.commit()
    assert counter.kicks == 3
