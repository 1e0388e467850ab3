"""``python -m lib drain --loop`` as a real process: woken by NOTIFY on PostgreSQL (and surviving the
loss of its LISTEN connection), polling on SQLite, stopping cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import os
import queue as stdqueue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import sqlalchemy as sa

from lib import Queue
from lib.models import JobSpec
from tests.support.db import count, make_queue

ROOT = Path(__file__).resolve().parents[2]
# Long enough that a job run within a few seconds was woken, not polled.
LONG_POLL = "60"
# LISTEN/NOTIFY is PostgreSQL's (SQLite workers poll, tested below).
POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


class Worker:
    """The worker process, its stderr read line by line in a thread (so waits can time out)."""

    def __init__(self, url: str, interval: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "JOB_", "CRON_"))}
        env.update(DATABASE_URL=url, JOBS_HANDLER_MODULES="tests.jobtypes", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lib", "drain", "--loop", "--interval", interval],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: stdqueue.Queue[str] = stdqueue.Queue()
        self.seen: list[str] = []
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self.reader.start()

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, f"no {text!r} in {self.seen}"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))
            except stdqueue.Empty:
                continue

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, list[dict[str, int]]]:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.proc.returncode, [json.loads(line) for line in out.splitlines()]

    def kill(self) -> None:
        """Always called last: kills a worker still running, closes the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def wait_completed(queue: Queue, job_id: str, within: float) -> float:
    """Seconds until the job is completed; fails past ``within``."""
    t0 = time.monotonic()
    while queue.get(job_id).status != "completed":
        assert time.monotonic() - t0 < within, f"job {job_id} still {queue.get(job_id).status}"
        time.sleep(0.02)
    return time.monotonic() - t0


def listener_pids(queue: Queue) -> list[int]:
    with queue.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'sluice-worker'"
            )
        )
        return [int(pid) for (pid,) in rows]


@POSTGRESQL
def test_notify_wakes_the_worker_and_survives_a_terminated_listener(db_url: str) -> None:
    queue = make_queue(db_url)
    worker = Worker(db_url, LONG_POLL)
    try:
        worker.expect("listening for enqueues")
        first = queue.enqueue("test.greet", {"name": "first"})
        assert wait_completed(queue, first.id, within=10) < 10
        # A delayed job sends no notification: it is still pending, untouched.
        later = queue.enqueue("test.greet", {"name": "later"}, delay_seconds=3600)

        pids = listener_pids(queue)
        assert len(pids) == 1
        with queue.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]}).scalar_one()
        worker.expect("lost the LISTEN connection")
        worker.expect("listening again")
        assert len(listener_pids(queue)) == 1 and listener_pids(queue) != pids

        second = queue.enqueue("test.greet", {"name": "second"})
        assert wait_completed(queue, second.id, within=10) < 10
        code, summaries = worker.stop(signal.SIGTERM)
    finally:
        worker.kill()
    assert code == 0, worker.seen
    assert worker.seen[-1].strip() == "stopped"
    assert sum(s["succeeded"] for s in summaries) == 2
    assert count(queue, "status = 'completed' AND attempts = 1") == 2
    assert queue.get(later.id).status == "pending" and queue.get(later.id).attempts == 0
    queue.engine.dispose()


@POSTGRESQL
def test_a_batch_sends_one_notification_and_only_for_ready_jobs(db_url: str) -> None:
    import psycopg

    from lib.store.notify import CHANNEL

    queue = make_queue(db_url)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        queue.enqueue_many([_spec(delay=3600) for _ in range(3)])
        assert list(listener.notifies(timeout=0.3)) == []
        queue.enqueue_many([_spec(delay=0) for _ in range(50)] + [_spec(delay=3600)])
        assert len(list(listener.notifies(timeout=0.3))) == 1
        # A rolled-back enqueue wakes nobody: the notification belongs to its transaction.
        with queue.engine.connect() as conn:
            tx = conn.begin()
            queue.enqueue("noop", conn=conn)
            tx.rollback()
        assert list(listener.notifies(timeout=0.3)) == []
    assert count(queue) == 54
    queue.engine.dispose()


def _spec(delay: int) -> JobSpec:
    return JobSpec.model_validate({"type": "noop", "delaySeconds": delay})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_worker_polls_and_stops_on_signals(db_url: str, sig: signal.Signals) -> None:
    queue = make_queue(db_url)
    worker = Worker(db_url, "0.2")
    try:
        worker.expect("polling every 0.2 s")
        job = queue.enqueue("test.greet", {"name": "polled"})
        wait_completed(queue, job.id, within=20)
        code, summaries = worker.stop(sig)
    finally:
        worker.kill()
    assert code == 0, worker.seen
    assert signal.Signals(sig).name in "".join(worker.seen)
    assert sum(s["succeeded"] for s in summaries) == 1
    assert count(queue, "status = 'completed'") == 1
    queue.engine.dispose()


@POSTGRESQL
def test_a_notification_ends_the_wait_at_once(db_url: str) -> None:
    """Regression: the wait ran to its timeout even after a notification had arrived."""
    import psycopg

    from lib.store import notify

    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url, autocommit=True) as other,
    ):
        notify.listen(listener)
        assert notify.wait(listener, 0.05) is False
        other.execute(f"NOTIFY {notify.CHANNEL}")
        t0 = time.monotonic()
        assert notify.wait(listener, 30) is True
        assert time.monotonic() - t0 < 10  # the whole 30 s before the fix
        assert notify.wait(listener, 0.05) is False
