"""fanOut: one cron tick becomes several overlapping drains of the app's own endpoint, and every
job still runs exactly once. Real HTTP on loopback, PostgreSQL (SKIP LOCKED) and SQLite."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lib import JobSpec
from lib.fanout import FANOUT_HEADER
from tests.e2e.appserver import ADMIN_KEY, serve_app, settings_for
from tests.support.db import make_queue


def post(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url, method="POST", data=b"", headers={"x-api-key": ADMIN_KEY, **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def test_fan_out_clears_more_than_one_drain_and_runs_each_job_once(db_url: str, tmp_path: Path) -> None:
    queue = make_queue(db_url)
    log = tmp_path / "runs.log"
    queue.enqueue_many([JobSpec(type="test.record", payload={"file": str(log)}) for _ in range(90)])
    with serve_app(settings_for(db_url), public_url=True) as base:
        summary = post(f"{base}/api/jobs/process?maxJobs=30&fanOut=3")
    assert (summary["processed"], summary["succeeded"], summary["remaining"]) == (90, 90, 0)
    runs = log.read_text().splitlines()
    assert len(runs) == 90 and len({line.split()[0] for line in runs}) == 90
    with queue.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, attempts, count(*) FROM sluice_jobs GROUP BY 1, 2")).all()
        drains = conn.execute(sa.text("SELECT count(*) FROM sluice_drains")).scalar_one()
    assert [tuple(r) for r in rows] == [("completed", 1, 90)]
    assert drains == 3  # the tick's own drain and two more, no deeper level
    queue.engine.dispose()


def test_no_fan_out_when_one_drain_suffices_or_when_called_by_a_fan_out(db_url: str) -> None:
    queue = make_queue(db_url)
    queue.enqueue_many([JobSpec(type="noop") for _ in range(40)])
    with serve_app(settings_for(db_url), public_url=True) as base:
        child = post(f"{base}/api/jobs/process?maxJobs=10&fanOut=4", {FANOUT_HEADER: "1"})
        assert (child["processed"], child["remaining"]) == (10, 30)
        small = post(f"{base}/api/jobs/process?maxJobs=50&fanOut=4")
        assert (small["processed"], small["remaining"]) == (30, 0)
    with queue.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sluice_drains")).scalar_one() == 2
    queue.engine.dispose()


@contextmanager
def trap_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server on another loopback address that records every request's headers and answers 200."""
    seen: list[dict[str, str]] = []

    class Record(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers.items()))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Record)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.2:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fan_out_never_sends_credentials_to_a_host_the_request_names(db_url: str) -> None:
    """Regression: fan-out calls went to the request's Host header, with the caller's key."""
    queue = make_queue(db_url)
    queue.enqueue_many([JobSpec(type="noop") for _ in range(40)])
    with trap_server() as (trap, seen):
        spoofed = {"Host": trap, "X-Forwarded-Host": trap, "X-Forwarded-Proto": "http"}
        with serve_app(settings_for(db_url), public_url=True) as base:
            summary = post(f"{base}/api/jobs/process?maxJobs=10&fanOut=4", spoofed)
        assert (summary["processed"], summary["remaining"]) == (40, 0)
        with serve_app(settings_for(db_url)) as base:  # no JOBS_PUBLIC_URL, not on Vercel
            with pytest.raises(urllib.error.HTTPError) as refused:
                post(f"{base}/api/jobs/process?maxJobs=1&fanOut=4", spoofed)
        assert refused.value.code == 422 and "JOBS_PUBLIC_URL" in refused.value.read().decode()
    assert seen == []
    with queue.engine.connect() as conn:
        # The tick's own drain and three helpers, all on the app; the 422 drained nothing.
        assert conn.execute(sa.text("SELECT count(*) FROM sluice_drains")).scalar_one() == 4
    queue.engine.dispose()
