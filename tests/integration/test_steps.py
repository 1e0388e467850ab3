"""Durable steps: ctx.step runs each step once per job across attempts, continuations, crashes
and manual retries; ctx.sleep ends an attempt uncounted; a step write is fenced on the claim."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from lib import Queue, steps
from tests import workers
from tests.support.api import ADMIN
from tests.support.db import count, expired_leases, make_queue
from tests.support.polling import wait_for


def runs(log: Path) -> list[str]:
    """The step executions logged by test.steps, in order ('<step>' per line; one job per log)."""
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines()]


def stored_steps(queue: Queue, job_id: str) -> dict[str, Any]:
    with queue.engine.connect() as conn:
        value = conn.execute(
            sa.text("SELECT steps FROM sluice_jobs WHERE id = :id"),
            {"id": uuid.UUID(job_id).hex if queue.dialect == "sqlite" else job_id},
        ).scalar()
    if isinstance(value, str):  # SQLite hands back JSON text through a plain text() query
        value = json.loads(value)
    return dict(value or {})


def attempt_outcomes(queue: Queue, job_id: str) -> list[tuple[int, str, str | None]]:
    return [(a.attempt, a.outcome, a.error) for a in queue.attempts(job_id)]


def wake_now(queue: Queue, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move both clocks ``seconds`` on: the job's run_at back (the database's), steps' utcnow on."""
    later = steps.utcnow() + timedelta(seconds=seconds)
    monkeypatch.setattr(steps, "utcnow", lambda: later)
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_jobs SET run_at = created_at WHERE status = 'pending'"))


THREE = {"one": {"step": "one", "at": [1, 2]}, "two": {"step": "two", "at": [1, 2]}}


def test_three_steps_sleeping_past_the_budget_run_each_step_once(
    queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step two is followed by a 1-hour sleep, far past the drain's budget: the first drain runs
    steps one and two and ends the attempt uncounted (maxAttempts 1); drains before the wake time
    find nothing; the drain after it runs step three only."""
    log = tmp_path / "steps.log"
    job = queue.enqueue("test.steps", {"file": str(log), "sleep": 3600})

    first = queue.drain(budget_ms=2000)
    assert (first.processed, first.succeeded, first.retried, first.failed) == (1, 0, 1, 0)
    assert runs(log) == ["one", "two"]
    asleep = queue.get(job.id)
    assert (asleep.status, asleep.attempts, asleep.max_attempts) == ("pending", 0, 1)
    assert asleep.run_at > datetime.now(asleep.run_at.tzinfo) + timedelta(minutes=59)
    assert asleep.last_error == "sleeping 3600 s (ctx.sleep)"
    assert set(stored_steps(queue, job.id)) == {"one", "two", "sleep#1"}
    assert [s.name for s in queue.steps(job.id)] == ["one", "two", "sleep#1"]

    assert queue.drain(budget_ms=2000).processed == 0  # not due yet
    wake_now(queue, monkeypatch, 3601)
    last = queue.drain(budget_ms=2000)
    assert (last.processed, last.succeeded, last.failed) == (1, 1, 0)
    done = queue.get(job.id)
    assert (done.status, done.attempts) == ("completed", 1)
    assert done.result == {**THREE, "three": {"step": "three", "at": [1, 2]}}
    assert runs(log) == ["one", "two", "three"]
    assert attempt_outcomes(queue, job.id) == [
        (1, "deferred", "sleeping 3600 s (ctx.sleep)"),
        (1, "completed", None),
    ]
    assert [s.name for s in queue.steps(job.id)] == ["one", "two", "sleep#1", "three"]
    assert queue.drain().processed == 0
    assert runs(log) == ["one", "two", "three"]


def test_a_sleep_woken_early_sleeps_the_rest(
    queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job run again before its sleep's wake time (its sleep was stored, then the process died
    and the lease ran out) sleeps the time left, uncounted, and runs no step again."""
    log = tmp_path / "steps.log"
    job = queue.enqueue("test.steps", {"file": str(log), "sleep": 600})
    queue.drain()
    with queue.engine.begin() as conn:  # due now, as a reclaim after a crash would make it
        conn.execute(sa.text("UPDATE sluice_jobs SET run_at = created_at"))
    later = steps.utcnow() + timedelta(seconds=300)
    monkeypatch.setattr(steps, "utcnow", lambda: later)

    assert queue.drain().retried == 1
    again = queue.get(job.id)
    assert (again.status, again.attempts, again.last_error) == ("pending", 0, "sleeping 300 s (ctx.sleep)")
    assert runs(log) == ["one", "two"]
    wake_now(queue, monkeypatch, 301)
    assert queue.drain().succeeded == 1
    assert runs(log) == ["one", "two", "three"]


def test_sigkill_between_steps_does_not_run_finished_steps_again(db_url: str, tmp_path: Path) -> None:
    """A drain in a child process is SIGKILLed after step one was stored (its handler signals
    through a file, then waits). Once the lease runs out, the next drain runs steps two and three
    only: step one ran exactly once."""
    overrides = {"jobs_lease_grace_seconds": 0}
    queue = make_queue(db_url, **overrides)
    log, pause = tmp_path / "steps.log", str(tmp_path / "pause")
    job = queue.enqueue("test.steps", {"file": str(log), "pause": pause}, max_attempts=2, timeout_seconds=2)
    proc = workers.start(workers.drain_once, db_url, overrides, 1)
    try:
        wait_for(lambda: os.path.exists(f"{pause}.ready"), what="step one to be stored")
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
    assert runs(log) == ["one"]
    assert set(stored_steps(queue, job.id)) == {"one"}
    assert count(queue, "status = 'processing' AND attempts = 1") == 1

    wait_for(lambda: expired_leases(queue) == 1, seconds=10, what="the lease to expire")
    summary = queue.drain()
    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (1, 1, 1, 0)
    done = queue.get(job.id)
    assert (done.status, done.attempts) == ("completed", 2)
    assert done.result == {**THREE, "three": {"step": "three", "at": [1, 2]}}
    assert runs(log) == ["one", "two", "three"]
    assert [s.name for s in queue.steps(job.id)] == ["one", "two", "three"]
    queue.engine.dispose()


def test_a_step_write_refused_after_a_takeover_stops_the_handler(queue: Queue, tmp_path: Path) -> None:
    """While the handler waits after step one, another drain takes the job over (a new claim
    token). Step two's body has run, but its write is refused: the handler stops before step
    three and this drain records nothing (no outcome, no attempt row, no count)."""
    log, pause = tmp_path / "steps.log", str(tmp_path / "pause")
    job = queue.enqueue("test.steps", {"file": str(log), "pause": pause}, max_attempts=3)
    summaries = []
    drain = threading.Thread(target=lambda: summaries.append(queue.drain()))
    drain.start()
    try:
        wait_for(lambda: os.path.exists(f"{pause}.ready"), what="step one to be stored")
        other = uuid.uuid4()
        with queue.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE sluice_jobs SET claim_token = :token, attempts = 2"),
                {"token": other.hex if queue.dialect == "sqlite" else other},
            )
    finally:
        Path(f"{pause}.go").touch()
        drain.join(30)
    assert not drain.is_alive()
    assert (summaries[0].processed, summaries[0].succeeded, summaries[0].retried) == (0, 0, 0)
    assert runs(log) == ["one", "two"]
    assert set(stored_steps(queue, job.id)) == {"one"}
    taken = queue.get(job.id)
    assert (taken.status, taken.attempts, taken.result) == ("processing", 2, None)
    assert count(queue, "claim_token IS NOT NULL") == 1
    assert attempt_outcomes(queue, job.id) == []


def test_a_failing_step_retries_with_finished_steps_kept(queue: Queue, tmp_path: Path) -> None:
    """Step two raises: the attempt is a normal retry; step one is not run again on attempt 2."""
    log, fixed = tmp_path / "steps.log", tmp_path / "fixed"
    job = queue.enqueue(
        "test.steps",
        {"file": str(log), "failTwo": str(fixed)},
        max_attempts=2,
        backoff={"strategy": "fixed", "delaySeconds": 0},
    )
    assert queue.drain(max_jobs=1).retried == 1
    assert (queue.get(job.id).status, queue.get(job.id).attempts) == ("pending", 1)
    assert queue.get(job.id).last_error == "RuntimeError: two failed"
    assert set(stored_steps(queue, job.id)) == {"one"}
    fixed.touch()
    assert queue.drain().succeeded == 1
    assert runs(log) == ["one", "two", "two", "three"]
    assert (queue.get(job.id).status, queue.get(job.id).attempts) == ("completed", 2)


def test_a_manual_retry_resumes_a_failed_job_after_its_finished_steps(queue: Queue, tmp_path: Path) -> None:
    """A failed job keeps its finished steps; a retry (single or bulk) resumes after them."""
    log, fixed = tmp_path / "steps.log", tmp_path / "fixed"
    job = queue.enqueue("test.steps", {"file": str(log), "failTwo": str(fixed)})
    assert queue.drain().failed == 1
    assert set(stored_steps(queue, job.id)) == {"one"}
    fixed.touch()
    retried = queue.retry(job.id)
    assert (retried.status, retried.attempts) == ("pending", 0)
    assert set(stored_steps(queue, job.id)) == {"one"}
    assert queue.drain().succeeded == 1
    assert runs(log) == ["one", "two", "two", "three"]


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("twice", "StepError: step name 'a' is used twice in one run: names must be unique per job"),
        ("unjson", "StepError: step 'a' returned a value that is not JSON-serialisable: "),
        ("name", "StepError: step name 'say \"hi\"' is not valid: a step name is 1..100 characters of"),
    ],
)
def test_misused_steps_fail_the_job_at_once_with_a_clear_error(queue: Queue, how: str, error: str) -> None:
    job = queue.enqueue("test.bad_steps", {"how": how})  # maxAttempts 3: a StepError is permanent
    assert queue.drain().failed == 1
    failed = queue.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert (failed.last_error or "").startswith(error)


def test_the_attempts_view_lists_finished_steps(client: FlaskClient, queue: Queue, tmp_path: Path) -> None:
    job = queue.enqueue("test.steps", {"file": str(tmp_path / "steps.log"), "sleep": 60})
    queue.drain()
    body = client.get(f"/api/jobs/{job.id}/attempts", headers=ADMIN).get_json()
    assert [s["name"] for s in body["steps"]] == ["one", "two", "sleep#1"]
    one = body["steps"][0]
    assert set(one) == {"name", "finishedAt", "resultBytes"}
    assert one["resultBytes"] == len('{"step":"one","at":[1,2]}')
    assert one["finishedAt"].endswith("Z")
    assert [a["outcome"] for a in body["attempts"]] == ["deferred"]
    plain = queue.enqueue("test.greet", {"name": "x"})
    assert client.get(f"/api/jobs/{plain.id}/attempts", headers=ADMIN).get_json()["steps"] == []


def test_a_job_longer_than_its_timeout_finishes_as_steps(queue: Queue, tmp_path: Path) -> None:
    """3 s of steps under a 2 s timeout and maxAttempts 1: three attempts of ~1 s each, joined by
    sleep(0) continuations (due at once, so one drain runs them all); each step runs once."""
    log = tmp_path / "steps.log"
    job = queue.enqueue("test.long_steps", {"file": str(log)})
    summary = queue.drain(budget_ms=30_000)
    assert (summary.processed, summary.succeeded, summary.retried, summary.failed) == (3, 1, 2, 0)
    done = queue.get(job.id)
    assert (done.status, done.attempts, done.result) == ("completed", 1, 6)
    assert runs(log) == [f"part-{i}" for i in range(6)]
    assert [a.outcome for a in queue.attempts(job.id)] == ["deferred", "deferred", "completed"]


def test_the_openapi_document_describes_steps(client: FlaskClient) -> None:
    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    step = schemas["StepInfo"]
    assert set(step["properties"]) == {"name", "finishedAt", "resultBytes"}
    assert set(step["required"]) == {"name", "finishedAt", "resultBytes"}
    assert schemas["AttemptList"]["properties"]["steps"]["items"] == {"$ref": "#/components/schemas/StepInfo"}
    assert "steps" in schemas["AttemptList"]["required"]
