"""GET /api/jobs/metrics and lib.metrics: Prometheus text read back with prometheus_client's parser,
on SQLite and PostgreSQL, every number checked against what the test put in the database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from api.index import create_app
from lib import Queue
from lib.config import Settings
from lib.metrics import CONTENT_TYPE
from lib.schema import drains

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """(value by (sample name, sorted labels), type by family name)."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_an_empty_queue_reports_zeros(queue: Queue) -> None:
    samples, types = parse(queue.metrics.render().decode())
    for status in ("pending", "processing", "completed", "failed", "cancelled"):
        assert value(samples, "sluice_jobs", status=status) == 0
        assert value(samples, "sluice_jobs_by_type", type="noop", status=status) == 0
    assert value(samples, "sluice_ready_jobs") == 0
    assert value(samples, "sluice_scheduled_jobs") == 0
    assert value(samples, "sluice_oldest_ready_age_seconds") == 0
    assert value(samples, "sluice_last_drain_timestamp_seconds") == 0
    assert value(samples, "sluice_drain_duration_seconds_count") == 0
    assert value(samples, "sluice_drain_jobs_total", outcome="failed") == 0
    assert not [key for key in samples if key[0] == "sluice_drains_total"]
    assert types["sluice_drains"] == "counter"
    assert types["sluice_drain_duration_seconds"] == "histogram"
    assert all(name.startswith("sluice_") for name in types)


def test_counts_and_drain_history(queue: Queue) -> None:
    queue.enqueue("noop")
    queue.enqueue("noop")
    queue.enqueue("test.fail", max_attempts=1)
    queue.enqueue("test.greet", {"name": "x"}, delay_seconds=3600)
    cancelled = queue.enqueue("noop", delay_seconds=3600)
    queue.cancel(cancelled.id)
    first = queue.drain(max_jobs=10, source="cli")
    assert (first.succeeded, first.failed) == (2, 1)
    queue.drain(source="api")
    queue.enqueue("noop", run_at=datetime.now(UTC) - timedelta(seconds=120))
    started = time.time()

    samples, _ = parse(queue.metrics.render().decode())
    assert value(samples, "sluice_jobs", status="completed") == 2
    assert value(samples, "sluice_jobs", status="failed") == 1
    assert value(samples, "sluice_jobs", status="pending") == 2
    assert value(samples, "sluice_jobs", status="cancelled") == 1
    assert value(samples, "sluice_jobs", status="processing") == 0
    assert value(samples, "sluice_jobs_by_type", type="noop", status="completed") == 2
    assert value(samples, "sluice_jobs_by_type", type="noop", status="pending") == 1
    assert value(samples, "sluice_jobs_by_type", type="test.fail", status="failed") == 1
    assert value(samples, "sluice_jobs_by_type", type="test.greet", status="pending") == 1
    assert value(samples, "sluice_jobs_by_type", type="test.greet", status="processing") == 0
    assert value(samples, "sluice_ready_jobs") == 1
    assert value(samples, "sluice_scheduled_jobs") == 1
    assert 119 <= value(samples, "sluice_oldest_ready_age_seconds") < 300

    assert value(samples, "sluice_drains_total", source="cli", stopped_by="empty") == 1
    assert value(samples, "sluice_drains_total", source="api", stopped_by="empty") == 1
    assert value(samples, "sluice_drain_jobs_total", outcome="succeeded") == 2
    assert value(samples, "sluice_drain_jobs_total", outcome="retried") == 0
    assert value(samples, "sluice_drain_jobs_total", outcome="failed") == 1
    # The api drain found nothing: counted above, but no history row, so no duration either.
    assert value(samples, "sluice_drain_duration_seconds_count") == 1
    assert value(samples, "sluice_drain_duration_seconds_bucket", le="+Inf") == 1
    assert abs(value(samples, "sluice_last_idle_drain_timestamp_seconds") - started) < 60
    buckets = sorted(
        (float(dict(labels)["le"]), n)
        for (name, labels), n in samples.items()
        if name == "sluice_drain_duration_seconds_bucket"
    )
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
    assert abs(value(samples, "sluice_last_drain_timestamp_seconds") - started) < 60


def test_the_duration_histogram_covers_the_last_day_only(queue: Queue) -> None:
    queue.enqueue("noop")
    queue.drain(source="cli")
    with queue.engine.begin() as conn:
        conn.execute(
            sa.insert(drains).values(
                at=datetime.now(UTC) - timedelta(days=2), source="cron", processed=7, succeeded=7,
                retried=0, failed=0, duration_ms=40_000, stopped_by="budget",
            )
        )  # fmt: skip
    samples, _ = parse(queue.metrics.render().decode())
    assert value(samples, "sluice_drains_total", source="cron", stopped_by="budget") == 1
    assert value(samples, "sluice_drain_jobs_total", outcome="succeeded") == 8
    assert value(samples, "sluice_drain_duration_seconds_count") == 1
    assert value(samples, "sluice_drain_duration_seconds_bucket", le="25.0") == 1


def test_the_endpoint_needs_an_admin_key(queue: Queue) -> None:
    settings = Settings(
        database_url=str(queue.settings.database_url),
        jobs_api_keys="admin-k",
        jobs_tenant_keys="acme:tenant-k",
        cron_secret="cron-s",
        jobs_handler_modules="tests.jobtypes",
    )
    client = create_app(settings, queue).test_client()
    queue.enqueue("noop")

    missing = client.get("/api/jobs/metrics")
    assert missing.status_code == 401 and missing.json["error"]["code"] == "unauthorized"
    assert client.get("/api/jobs/metrics", headers={"x-api-key": "tenant-k"}).status_code == 403
    assert client.get("/api/jobs/metrics", headers={"Authorization": "Bearer cron-s"}).status_code == 403
    assert client.post("/api/jobs/metrics", headers={"x-api-key": "admin-k"}).status_code == 405

    for path in ("/api/jobs/metrics", "/api/jobs/metrics/"):
        ok = client.get(path, headers={"Authorization": "Bearer admin-k"})
        assert ok.status_code == 200
        assert ok.headers["Content-Type"] == CONTENT_TYPE
        assert ok.headers["Cache-Control"] == "no-store"
        samples, _ = parse(ok.get_data(as_text=True))
        assert value(samples, "sluice_jobs", status="pending") == 1
        assert value(samples, "sluice_ready_jobs") == 1
