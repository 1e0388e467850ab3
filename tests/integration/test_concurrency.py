"""Overlapping drains and enqueues: every job runs exactly once, one key makes one job.

Drains run in real processes (spawn), each with its own Queue built from the URL, so nothing is
shared but the database. Proof of "exactly once" is twofold: the handler appends a line per run
to a file (O_APPEND), and the database holds attempts = 1 for every job.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from lib import Enqueued, JobSpec, Queue
from lib.store import claim
from tests import workers
from tests.support.db import count, make_queue
from tests.support.drainers import run_drainers, runs_per_job


def enqueue_records(queue: Queue, path: Path, n: int) -> set[str]:
    ids: set[str] = set()
    for start in range(0, n, 1000):
        chunk = range(start, min(start + 1000, n))
        specs = [JobSpec(type="test.record", payload={"file": str(path)}) for _ in chunk]
        ids.update(job.id for job in queue.enqueue_many(specs))
    return ids


def test_two_drain_processes_run_each_job_exactly_once(db_url: str, tmp_path: Path) -> None:
    queue = make_queue(db_url)
    path = tmp_path / "runs.log"
    ids = enqueue_records(queue, path, 2000)
    assert len(ids) == 2000

    reports = run_drainers(db_url, 2, {"jobs_batch_size": 50})

    runs = runs_per_job(path)
    assert set(runs) == ids
    assert set(runs.values()) == {1}
    assert sum(processed for _, processed, _ in reports) == 2000
    assert count(queue, "status = 'completed' AND attempts = 1 AND claim_token IS NULL") == 2000
    assert count(queue) == 2000
    if queue.dialect == "postgresql":
        # SKIP LOCKED lets both take disjoint batches; SQLite serialises writers, so one may
        # legitimately take everything.
        assert all(processed > 0 for _, processed, _ in reports), reports
    queue.engine.dispose()


@pytest.mark.slow
@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_sixteen_drain_processes_on_postgresql(db_url: str, tmp_path: Path) -> None:
    queue = make_queue(db_url)
    path = tmp_path / "runs.log"
    ids = enqueue_records(queue, path, 10_000)

    overrides = {"jobs_batch_size": 50, "jobs_db_pool": "null"}
    reports = run_drainers(db_url, 16, overrides, workers.FORKSERVER)

    runs = runs_per_job(path)
    assert set(runs) == ids and set(runs.values()) == {1}
    assert sum(processed for _, processed, _ in reports) == 10_000
    assert count(queue, "status = 'completed' AND attempts = 1 AND claim_token IS NULL") == 10_000
    assert count(queue) == 10_000
    with queue.engine.connect() as conn:
        # The handler returns its pid: the jobs really were spread over processes.
        pids = conn.execute(sa.text("SELECT count(DISTINCT result->>'pid') FROM sluice_jobs")).scalar_one()
    assert pids >= 2, reports
    queue.engine.dispose()


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_claim_skips_rows_another_claim_holds(queue: Queue) -> None:
    """A claim whose transaction is still open must not block a second claim (SKIP LOCKED):
    the second takes the next jobs at once, without waiting on the first's row locks."""
    queue.enqueue_many([JobSpec(type="noop") for _ in range(10)])
    token_a, token_b = uuid.uuid4(), uuid.uuid4()
    with queue.engine.connect() as first, queue.engine.connect() as second:
        tx_a = first.begin()
        held = claim.claim_batch(first, 5, token_a, 30)
        with second.begin():
            # Without SKIP LOCKED the claim would wait for `first` and hit this timeout.
            second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            started = time.monotonic()
            taken = claim.claim_batch(second, 10, token_b, 30)
            waited = time.monotonic() - started
        tx_a.commit()
    assert len(held) == 5 and len(taken) == 5
    assert not {j.id for j in held} & {j.id for j in taken}
    assert waited < 1.0
    assert count(queue, "status = 'processing' AND attempts = 1") == 10
    assert count(queue, "claim_token = :t", t=token_a) == 5
    assert count(queue, "claim_token = :t", t=token_b) == 5


def test_concurrent_enqueues_with_one_key_make_one_job(db_url: str) -> None:
    threads = 20
    queues = [make_queue(db_url) for _ in range(threads)]
    for q in queues:
        assert q.ping()  # connect first, so the barrier releases inserts, not handshakes
    barrier = threading.Barrier(threads)
    results: list[Enqueued | BaseException] = [RuntimeError("no result")] * threads

    def submit(index: int) -> None:
        barrier.wait(30)
        try:
            results[index] = queues[index].submit(
                JobSpec(type="noop", idempotency_key="the-one", payload={"from": index})
            )
        except BaseException as exc:
            results[index] = exc

    pool = [threading.Thread(target=submit, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    for q in queues:
        q.engine.dispose()

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    made = [r for r in results if isinstance(r, Enqueued)]
    assert len({e.job.id for e in made}) == 1
    assert sum(e.created for e in made) == 1
    winner = next(e for e in made if e.created)
    # Everyone sees the stored job, not their own payload.
    assert {e.job.payload["from"] for e in made} == {winner.job.payload["from"]}
    queue = make_queue(db_url)
    assert count(queue) == 1
    assert count(queue, "idempotency_key = 'the-one'") == 1
    queue.engine.dispose()
