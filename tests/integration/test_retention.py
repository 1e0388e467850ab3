"""Retention and tenant erasure on both databases; the S3 archive faked by moto."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Queue, Unavailable, ValidationError, aws
from lib.retention import CleanupRequest
from lib.schema import drains, jobs
from lib.store.clock import now_plus
from tests.support.archive import BUCKET, DAY, archived_rows, make_job
from tests.support.db import count, make_queue

KEY = re.compile(r"sluice/archive/\d{4}/\d{2}/\d{2}/\d{8}T\d{12}Z-[0-9a-f]{32}\.jsonl\.gz")


def ids(queue: Queue) -> set[str]:
    with queue.engine.connect() as conn:
        return {str(i) for i in conn.execute(sa.select(jobs.c.id)).scalars()}


def rows_as_archived(queue: Queue, wanted: set[str]) -> list[dict[str, Any]]:
    """Full rows, JSON-normalised the way the archive writes them."""
    from lib.retention import _json_value

    with queue.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(*jobs.c))]
    picked = [r for r in rows if str(r["id"]) in wanted]
    return sorted((json.loads(json.dumps(r, default=_json_value)) for r in picked), key=lambda r: r["id"])


@pytest.fixture
def pile(queue: Queue) -> dict[str, str]:
    """One job per (status, age) case; ages in seconds before now."""
    return {
        "completed_young": make_job(queue, "completed", 10),
        "completed_old": make_job(queue, "completed", 1000),
        "completed_ancient": make_job(queue, "completed", 100 * DAY),
        "failed_young": make_job(queue, "failed", 10),
        "failed_old": make_job(queue, "failed", 8 * DAY),
        "cancelled_young": make_job(queue, "cancelled", 10),
        "cancelled_old": make_job(queue, "cancelled", 8 * DAY),
        # finishedAt set on jobs that are not finished: retention must still never touch them.
        "pending_old": make_job(queue, "pending", 100 * DAY),
        "processing_old": make_job(queue, "processing", 100 * DAY),
        "pending_plain": make_job(queue, "pending"),
    }


def test_cleanup_deletes_exactly_the_rows_past_their_age(queue: Queue, pile: dict[str, str]) -> None:
    result = queue.retention.cleanup(
        completed_older_than=500, failed_older_than=7 * DAY, cancelled_older_than=7 * DAY
    )
    assert result.deleted == {"completed": 2, "failed": 1, "cancelled": 1}
    assert result.archived == 0 and result.duration_ms >= 0
    gone = {"completed_old", "completed_ancient", "failed_old", "cancelled_old"}
    assert ids(queue) == {jid for name, jid in pile.items() if name not in gone}
    assert count(queue, "status IN ('pending', 'processing')") == 3
    again = queue.retention.cleanup(
        completed_older_than=500, failed_older_than=7 * DAY, cancelled_older_than=7 * DAY
    )
    assert again.deleted == {"completed": 0, "failed": 0, "cancelled": 0}


def test_defaults_come_from_settings(db_url: str) -> None:
    q = make_queue(db_url, jobs_cleanup_completed_seconds=100, jobs_cleanup_failed_seconds=5)
    try:
        make_job(q, "completed", 50)
        make_job(q, "completed", 500)
        make_job(q, "failed", 50)
        make_job(q, "cancelled", 8 * DAY)  # default 7 days
        make_job(q, "cancelled", 6 * DAY)
        assert q.retention.cleanup().deleted == {"completed": 1, "failed": 1, "cancelled": 1}
        assert count(q) == 2
    finally:
        q.engine.dispose()


def test_dry_run_counts_and_deletes_nothing(queue: Queue, pile: dict[str, str]) -> None:
    result = queue.retention.cleanup(
        completed_older_than=0, failed_older_than=0, cancelled_older_than=0, dry_run=True
    )
    assert result.deleted == {"completed": 3, "failed": 2, "cancelled": 2}
    assert result.archived == 0
    assert ids(queue) == set(pile.values())


def test_bounded_batches_and_budget(queue: Queue) -> None:
    for _ in range(5):
        make_job(queue, "completed", 10 * DAY)
    assert queue.retention.cleanup(budget_ms=0).deleted["completed"] == 0  # no time: nothing started
    assert count(queue) == 5
    result = queue.retention.cleanup(batch_size=2)
    assert result.deleted == {"completed": 5, "failed": 0, "cancelled": 0}
    assert count(queue) == 0


def test_per_type_ages(queue: Queue) -> None:
    keep = make_job(queue, "completed", 2 * DAY, type="test.record")
    make_job(queue, "completed", 2 * DAY)
    make_job(queue, "failed", 60, type="test.record")
    result = queue.retention.cleanup(per_type={"test.record": 30 * DAY, "noop": 0}, failed_older_than=0)
    assert result.deleted == {"completed": 1, "failed": 0, "cancelled": 0}
    assert keep in ids(queue) and count(queue) == 2
    with pytest.raises(ValidationError):
        queue.retention.cleanup(per_type={"noop": -1})
    with pytest.raises(ValidationError):
        queue.retention.cleanup(completed_older_than=-5)


def test_trims_drain_history_past_30_days(queue: Queue) -> None:
    base = {"source": "cron", "processed": 0, "succeeded": 0, "retried": 0, "failed": 0, "duration_ms": 1}
    with queue.engine.begin() as conn:
        for age in (31 * DAY, 29 * DAY, 60):
            conn.execute(
                sa.insert(drains).values(at=now_plus(queue.dialect, -age), stopped_by="empty", **base)
            )
    queue.retention.cleanup()
    with queue.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(drains)).scalar_one() == 2


def test_cleanup_request_body_is_strict() -> None:
    body = CleanupRequest.model_validate({"completedOlderThanSeconds": 60, "dryRun": True})
    assert (body.completed_older_than_seconds, body.dry_run) == (60, True)
    for bad in (
        {"nope": 1},
        {"dryRun": "yes"},
        {"failedOlderThanSeconds": 3_153_600_001},
        {"cancelledOlderThanSeconds": -1},
    ):
        with pytest.raises(Exception) as err:
            CleanupRequest.model_validate(bad)
        assert type(err.value).__name__ == "ValidationError"


# -- archive ---------------------------------------------------------------------------------------


def test_archive_holds_exactly_the_deleted_rows(archived_queue: Queue) -> None:
    q = archived_queue
    aws.client("s3", "us-east-1").create_bucket(Bucket=BUCKET)
    old = {make_job(q, "completed", 2 * DAY, tenant="acme") for _ in range(3)}
    old |= {make_job(q, "failed", 8 * DAY)}
    young = make_job(q, "completed", 10)
    expected = rows_as_archived(q, old)
    result = q.retention.cleanup(batch_size=2)
    assert result.deleted == {"completed": 3, "failed": 1, "cancelled": 0}
    assert result.archived == 4
    keys, rows = archived_rows()
    assert len(keys) == 3  # completed in batches of 2 and 1, failed in one
    assert all(KEY.fullmatch(key) for key in keys), keys
    assert rows == expected
    assert rows[0]["payload"] == {} and {r["status"] for r in rows} == {"completed", "failed"}
    assert ids(q) == {young}


def test_failed_upload_deletes_nothing(archived_queue: Queue) -> None:
    q = archived_queue  # the bucket doesn't exist: every upload fails
    old = {make_job(q, "completed", 2 * DAY) for _ in range(3)}
    with pytest.raises(Unavailable) as err:
        q.retention.cleanup()
    assert "not deleted" in err.value.message
    assert ids(q) == old


def test_erase_tenant_everywhere(archived_queue: Queue) -> None:
    q = archived_queue
    s3 = aws.client("s3", "us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    # Two archive objects: one only acme's rows, one mixed.
    make_job(q, "completed", 2 * DAY, tenant="acme")
    q.retention.cleanup()
    mixed = {
        make_job(q, "completed", 2 * DAY, tenant="acme"),
        make_job(q, "completed", 2 * DAY, tenant="other"),
    }
    assert len(mixed) == 2
    q.retention.cleanup()
    assert len(archived_rows()[1]) == 3
    live = {
        make_job(q, "pending", tenant="acme"),
        make_job(q, "failed", 10, tenant="acme"),
        make_job(q, "cancelled", 10, tenant="acme"),
    }
    running = make_job(q, "processing", tenant="acme")
    others = {make_job(q, "pending", tenant="other"), make_job(q, "pending")}
    q.schedules.put_schedule("acme.daily", {"cron": "0 2 * * *", "type": "noop", "tenantId": "acme"})
    q.schedules.put_schedule("global", {"cron": "0 2 * * *", "type": "noop"})

    result = q.retention.erase_tenant("acme")
    assert result.to_wire() == {"deleted": 3, "schedules": 1, "processing": 1}
    assert ids(q) == others | {running}
    assert [s.name for s in q.schedules.list_schedules()] == ["global"]
    keys, rows = archived_rows()
    assert len(keys) == 1 and [r["tenant_id"] for r in rows] == ["other"]
    assert live.isdisjoint(ids(q))
    # Gzip JSON lines, readable with standard tools.
    blob = s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
    assert json.loads(gzip.decompress(blob).decode().splitlines()[0])["tenant_id"] == "other"


def test_erase_unknown_tenant_is_zeros(queue: Queue) -> None:
    make_job(queue, "pending", tenant="someone")
    assert queue.retention.erase_tenant("nobody").to_wire() == {"deleted": 0, "schedules": 0, "processing": 0}
    assert count(queue) == 1
    with pytest.raises(ValidationError):
        queue.retention.erase_tenant("")


def test_erase_in_batches(queue: Queue) -> None:
    for _ in range(5):
        make_job(queue, "completed", 10, tenant="t")
    assert queue.retention.erase_tenant("t", batch_size=2).deleted == 5
    assert count(queue) == 0
