"""A tenant erase while a cleanup is archiving that tenant's rows (the upload held up, rows
locked): the erase waits for the cleanup instead of skipping its rows, reads the archive only
after the cleanup's object exists, and leaves none of the tenant's rows anywhere."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Queue, aws, retention
from lib.retention import Archive, CleanupResult, EraseResult
from tests.support.archive import BUCKET, DAY, archived_rows, make_job
from tests.support.db import count

WAIT_SECONDS = 10.0


def erase_is_waiting(queue: Queue) -> bool:
    """PostgreSQL: another session of this database waits for a row lock (the erase)."""
    with queue.engine.connect() as conn:
        waiting = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return bool(waiting)


def test_erase_during_a_cleanup_archiving_the_tenant(
    archived_queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    q = archived_queue
    aws.client("s3", "us-east-1").create_bucket(Bucket=BUCKET)
    being_archived = {make_job(q, "completed", 2 * DAY, tenant="acme") for _ in range(4)}
    for _ in range(2):
        make_job(q, "completed", 10, tenant="acme")  # too young for the cleanup
    other = make_job(q, "completed", 2 * DAY, tenant="other")
    uploading, erase_started = threading.Event(), threading.Event()
    real_put = Archive.put

    def slow_put(self: Archive, rows: list[dict[str, Any]], *args: Any) -> str:
        # The cleanup holds its batch (rows locked, not yet committed) while S3 is slow: long
        # enough for the erase to start and reach those rows.
        uploading.set()
        assert erase_started.wait(WAIT_SECONDS)
        deadline = time.monotonic() + WAIT_SECONDS
        if q.dialect == "postgresql":
            while not erase_is_waiting(q) and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(0.3)  # SQLite: the erase waits for the writer lock (busy timeout)
        return real_put(self, rows, *args)

    monkeypatch.setattr(Archive, "put", slow_put)
    results: dict[str, CleanupResult | EraseResult | BaseException] = {}

    def run(name: str, fn: Any) -> None:
        try:
            results[name] = fn()
        except BaseException as exc:  # reported below
            results[name] = exc

    cleaner = threading.Thread(target=run, args=("cleanup", q.retention.cleanup))
    cleaner.start()
    assert uploading.wait(WAIT_SECONDS)
    eraser = threading.Thread(target=run, args=("erase", lambda: q.retention.erase_tenant("acme")))
    eraser.start()
    erase_started.set()
    cleaner.join(60)
    eraser.join(60)
    cleaned, erased = results["cleanup"], results["erase"]
    assert isinstance(cleaned, CleanupResult), cleaned
    assert isinstance(erased, EraseResult), erased
    # The cleanup archived and deleted its batch (acme's four old rows and other's one); the
    # erase deleted what was left of acme (the two young rows), and then found the four in the
    # archive.
    assert cleaned.deleted["completed"] == 5 and cleaned.archived == 5
    assert erased.to_wire() == {"deleted": 2, "schedules": 0, "processing": 0}
    assert count(q, "tenant_id = 'acme'") == 0
    _, rows = archived_rows()
    assert [row["id"] for row in rows] == [other]
    assert being_archived.isdisjoint(row["id"] for row in rows)


def test_two_erases_rewriting_one_archive_object_take_turns(
    archived_queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each erase reads an object, filters its tenant out and writes the rest back: run at once
    on the same object, the second write would bring back the rows the first removed."""
    q = archived_queue
    if q.dialect != "postgresql":
        pytest.skip("SQLite deployments have one machine; the lock is PostgreSQL's")
    aws.client("s3", "us-east-1").create_bucket(Bucket=BUCKET)
    other = make_job(q, "completed", 2 * DAY, tenant="other")
    for tenant in ("a", "b"):
        make_job(q, "completed", 2 * DAY, tenant=tenant)
    assert q.retention.cleanup().archived == 3
    assert len(archived_rows()[0]) == 1  # one object holds all three
    both_read = threading.Barrier(2, timeout=1.0)
    real_encode = retention.encode_rows

    def slow_encode(rows: list[dict[str, Any]]) -> bytes:
        # Between reading the object and writing it back: wait (a little) for the other erase.
        # Broken after a second: the other erase is waiting for the lock and reads after this write.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return real_encode(rows)

    monkeypatch.setattr(retention, "encode_rows", slow_encode)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda t=tenant: results.append(q.retention.erase_tenant(t)))
        for tenant in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2
    _, rows = archived_rows()
    assert [row["id"] for row in rows] == [other]
