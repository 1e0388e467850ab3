"""Kick on enqueue under ``gunicorn api.index:app`` on loopback with JOBS_PUBLIC_URL pointing at it
and no cron at all: an enqueue starts a drain of its own deployment; a burst makes a handful."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.appserver import call, clean_env, free_port, gunicorn_server
from tests.support.db import rows

WORKERS = 2


@pytest.fixture
def kicking(pg_url: str) -> Iterator[str]:
    """gunicorn -w 2 that kicks itself; nothing else ever drains."""
    port = free_port()
    env = clean_env(pg_url, JOBS_PUBLIC_URL=f"http://127.0.0.1:{port}")
    with gunicorn_server(env, port, "-w", str(WORKERS), "--threads", "4") as base:
        yield base


def settle(url: str, total: int, timeout: float = 30) -> None:
    """Until every job is completed (kick drains run on their own)."""
    deadline = time.monotonic() + timeout
    while rows(url, "SELECT count(*) FROM sluice_jobs WHERE status = 'completed'")[0][0] < total:
        assert time.monotonic() < deadline, rows(url, "SELECT status, count(*) FROM sluice_jobs GROUP BY 1")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.pg
def test_an_enqueue_kicks_a_drain_and_a_burst_makes_a_handful(kicking: str, pg_url: str) -> None:
    base = kicking
    t0 = time.monotonic()
    status, job = call(base, "POST", "/api/jobs", {"type": "test.greet", "payload": {"name": "kick"}})
    assert status == 201 and job["status"] == "pending"
    settle(pg_url, 1, timeout=10)
    assert time.monotonic() - t0 < 10
    status, done = call(base, "GET", f"/api/jobs/{job['id']}")
    assert (done["status"], done["attempts"], done["result"]["greeting"]) == ("completed", 1, "hello kick")
    deadline = time.monotonic() + 10
    while not (kicks := rows(pg_url, "SELECT source, processed FROM sluice_drains")):
        assert time.monotonic() < deadline, "the job completed but its drain was never recorded"
        time.sleep(0.05)  # a drain records itself after its jobs' outcomes
    assert [source for source, _ in kicks] == ["kick"] and kicks[0][1] == 1
    status, overview = call(base, "GET", "/api/jobs/status")
    assert overview["lastDrain"]["source"] == "kick"
    time.sleep(1.2)  # past the interval: the burst below starts afresh

    burst_started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(base, "POST", "/api/jobs", {"type": "noop"}), range(100)))
    burst = time.monotonic() - burst_started
    assert [status for status, _ in answers] == [201] * 100
    settle(pg_url, 101)
    time.sleep(1.5)  # trailing kicks owed by the burst have run
    drains = rows(pg_url, "SELECT source, processed FROM sluice_drains ORDER BY id")[1:]
    assert {source for source, _ in drains} == {"kick"}
    assert sum(processed for _, processed in drains) == 100
    # Per worker: one kick at once, one per interval while the burst lasts, one trailing.
    assert len(drains) <= WORKERS * (2 + math.ceil(burst)), (len(drains), burst)
    assert rows(pg_url, "SELECT max(attempts) FROM sluice_jobs")[0][0] == 1
