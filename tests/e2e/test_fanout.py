"""fanOut: one cron tick becomes several overlapping drains of the app's own endpoint, and every
job still runs exactly once. Real HTTP on loopback, PostgreSQL (SKIP LOCKED) and SQLite."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lib import JobSpec
from lib.fanout import FANOUT_HEADER
from tests.conftest import make_queue
from tests.e2e.appserver import ADMIN_KEY, serve_app, settings_for


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
    with serve_app(settings_for(db_url)) as base:
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
    with serve_app(settings_for(db_url)) as base:
        child = post(f"{base}/api/jobs/process?maxJobs=10&fanOut=4", {FANOUT_HEADER: "1"})
        assert (child["processed"], child["remaining"]) == (10, 30)
        small = post(f"{base}/api/jobs/process?maxJobs=50&fanOut=4")
        assert (small["processed"], small["remaining"]) == (30, 0)
    with queue.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sluice_drains")).scalar_one() == 2
    queue.engine.dispose()
