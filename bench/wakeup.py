"""Enqueue → start latency with no cron at all: kick on enqueue under gunicorn, and a
`python -m lib drain --loop` worker woken by NOTIFY. Latency is the job's started_at minus its
created_at, both from the database clock."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from bench import server
from bench.server import REPO, gunicorn

# Between single enqueues: jobs arrive one by one (a burst would measure collapsing, not waking).
SPACING_S = 0.01


def _latencies(dsn: str, n: int, timeout: float = 120.0) -> tuple[list[float], int]:
    """Seconds from created_at to started_at of every job once all are completed; (sorted, kick drains)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM sluice_jobs WHERE status = 'completed'").fetchone()
            if row is not None and row[0] >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row[0] if row else 0} of {n} jobs completed after {timeout:.0f} s")
            time.sleep(0.05)
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at)::float8 FROM sluice_jobs ORDER BY 1"
        ).fetchall()
        kicks = conn.execute("SELECT count(*) FROM sluice_drains WHERE source = 'kick'").fetchone()
    return [float(r[0]) for r in rows], int(kicks[0]) if kicks else 0


def quantiles(values: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]


def kick_latency(dsn: str, n: int) -> tuple[list[float], int]:
    """gunicorn -w 2 with JOBS_PUBLIC_URL = itself; n single POST /api/jobs; nothing else drains."""
    port = server.free_port()
    env = server.app_env(dsn, JOBS_PUBLIC_URL=f"http://127.0.0.1:{port}")
    with gunicorn(dsn, ["-w", "2", "--threads", "4", "--timeout", "120"], env=env, port=port) as srv:
        client = srv.client(timeout=30)
        try:
            for _ in range(n):
                status, body = client.request("POST", "/api/jobs", {"type": "noop"})
                if status != 201:
                    raise RuntimeError(f"POST /api/jobs answered {status}: {str(body)[:200]}")
                time.sleep(SPACING_S)
        finally:
            client.close()
        return _latencies(dsn, n)


def notify_latency(dsn: str, n: int) -> list[float]:
    """A `drain --loop --interval 60` worker (so polling never explains a start); n single
    in-process enqueues."""
    import lib

    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        log = Path(tmp) / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "lib", "drain", "--loop", "--interval", "60"],
                cwd=REPO,
                env=server.app_env(dsn, JOBS_LOG_LEVEL="WARNING"),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        q = lib.Queue.from_url(dsn)
        try:
            deadline = time.monotonic() + 60
            while b"listening for enqueues" not in log.read_bytes():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker is not listening: {log.read_text()[-500:]}")
                time.sleep(0.05)
            for _ in range(n):
                q.enqueue("noop")
                time.sleep(SPACING_S)
            latencies, _ = _latencies(dsn, n)
        finally:
            q.engine.dispose()
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return latencies

