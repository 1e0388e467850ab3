"""Who bounds a drain and where fan-out calls go: a cron tick (CRON_SECRET) drains up to
JOBS_CRON_MAX_JOBS, an API key keeps the default 10; fan-out targets come from settings only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import JobSpec, Queue
from lib.config import Settings
from lib.deployment import BYPASS_HEADER, OwnDeployment, own_deployment
from lib.fanout import FanOut
from tests.support.api import api_settings
from tests.support.db import count

ADMIN = {"x-api-key": "k1"}
CRON = {"Authorization": "Bearer cs", "User-Agent": "vercel-cron/1.0"}


def client_for(db_url: str, **overrides: Any) -> Iterator[FlaskClient]:
    app = create_app(api_settings(db_url, **overrides))
    yield app.test_client()
    app_state(app).dispose()


@pytest.fixture
def cron_client(db_url: str) -> Iterator[FlaskClient]:
    yield from client_for(db_url, jobs_cron_max_jobs=25)


def drains(queue: Queue) -> list[tuple[str, int]]:
    with queue.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source, processed FROM sluice_drains ORDER BY id"))
        return [(r[0], r[1]) for r in rows]


def test_a_cron_tick_drains_up_to_jobs_cron_max_jobs(cron_client: FlaskClient, queue: Queue) -> None:
    queue.enqueue_many([JobSpec(type="noop") for _ in range(30)])
    summary = cron_client.get("/api/jobs/process", headers=CRON).get_json()
    assert (summary["processed"], summary["remaining"], summary["stoppedBy"]) == (25, 5, "maxJobs")
    assert count(queue, "status = 'completed'") == 25
    assert drains(queue) == [("cron", 25)]


def test_an_api_key_keeps_the_default_of_ten_and_maxjobs_still_wins(
    cron_client: FlaskClient, queue: Queue
) -> None:
    queue.enqueue_many([JobSpec(type="noop") for _ in range(30)])
    by_key = cron_client.post("/api/jobs/process", headers=ADMIN).get_json()
    assert (by_key["processed"], by_key["remaining"]) == (10, 20)
    by_cron = cron_client.get("/api/jobs/process?maxJobs=3", headers=CRON).get_json()
    assert (by_cron["processed"], by_cron["remaining"]) == (3, 17)
    assert drains(queue) == [("api", 10), ("cron", 3)]
    assert count(queue, "status = 'completed'") == 13


def test_jobs_cron_max_jobs_defaults_to_1000_and_is_bounded() -> None:
    assert Settings().jobs_cron_max_jobs == 1000
    for bad in (0, 10_001):
        with pytest.raises(ValueError, match="jobs_cron_max_jobs"):
            Settings(jobs_cron_max_jobs=bad)


@pytest.mark.parametrize("fan_out", ["2", "16"])
def test_fan_out_without_a_known_own_url_is_422_naming_jobs_public_url(
    db_url: str, queue: Queue, fan_out: str
) -> None:
    queue.enqueue_many([JobSpec(type="noop") for _ in range(3)])
    for client in client_for(db_url):
        response = client.post(
            f"/api/jobs/process?maxJobs=1&fanOut={fan_out}",
            headers={**ADMIN, "Host": "attacker.example", "X-Forwarded-Host": "attacker.example"},
        )
        assert response.status_code == 422, response.get_data(as_text=True)
        error = response.get_json()["error"]
        assert error["code"] == "validation_error" and "JOBS_PUBLIC_URL" in error["message"]
        assert error["details"][0]["loc"] == "fanOut"
        # fanOut=1 (off) needs no URL.
        assert client.post("/api/jobs/process?fanOut=1", headers=ADMIN).status_code == 200
    assert count(queue, "status = 'pending'") == 0
    assert drains(queue) == [("api", 3)]


def test_own_deployment_is_the_public_url_else_this_vercel_deployment() -> None:
    assert own_deployment(Settings()) is None
    assert own_deployment(Settings(jobs_public_url="https://q.example.com/")) == OwnDeployment(
        "https://q.example.com"
    )
    vercel = Settings(vercel_url="sluice-abc123-team.vercel.app")
    assert own_deployment(vercel) == OwnDeployment("https://sluice-abc123-team.vercel.app")
    both = Settings(jobs_public_url="https://q.example.com", vercel_url="sluice-abc123-team.vercel.app")
    assert own_deployment(both) == OwnDeployment("https://q.example.com")
    # Vercel's bypass secret goes to Vercel's own URL, never to another JOBS_PUBLIC_URL.
    secret = {"vercel_automation_bypass_secret": "s3cr3t"}
    assert own_deployment(Settings(vercel_url="d.vercel.app", **secret)) == OwnDeployment(
        "https://d.vercel.app", {BYPASS_HEADER: "s3cr3t"}
    )
    assert own_deployment(Settings(jobs_public_url="https://q.example.com", **secret)) == OwnDeployment(
        "https://q.example.com"
    )


def test_own_deployment_reads_vercels_system_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBS_PUBLIC_URL", raising=False)
    monkeypatch.setenv("VERCEL_URL", "sluice-git-branch-team.vercel.app")
    # The production URL names another deployment than a preview's own: never used.
    monkeypatch.setenv("VERCEL_PROJECT_PRODUCTION_URL", "sluice.example.com")
    target = own_deployment(Settings())
    assert target is not None and target.base_url == "https://sluice-git-branch-team.vercel.app"


@pytest.mark.parametrize("bad", ["q.example.com", "ftp://q.example.com", "//q.example.com"])
def test_jobs_public_url_must_be_http_or_https(bad: str) -> None:
    with pytest.raises(ValueError, match="JOBS_PUBLIC_URL must be an http"):
        Settings(jobs_public_url=bad)


def test_on_vercel_fan_out_calls_this_deployment_with_the_bypass_secret(
    db_url: str, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[str, dict[str, str], int]] = []

    def record(self: FanOut, calls: int) -> FanOut:
        started.append((self.url, dict(self.headers), calls))
        return self

    monkeypatch.setattr(FanOut, "start", record)
    queue.enqueue_many([JobSpec(type="noop") for _ in range(9)])
    overrides = {"vercel_url": "sluice-abc123.vercel.app", "vercel_automation_bypass_secret": "byp"}
    for client in client_for(db_url, **overrides):
        summary = client.post(
            "/api/jobs/process?maxJobs=3&fanOut=3&budgetMs=5000",
            headers={**ADMIN, "Host": "attacker.example", "X-Forwarded-Host": "attacker.example"},
        ).get_json()
        assert summary["processed"] == 3
    assert started == [
        (
            "https://sluice-abc123.vercel.app/api/jobs/process?maxJobs=3&budgetMs=5000",
            {BYPASS_HEADER: "byp", "X-Api-Key": "k1"},
            2,
        )
    ]
