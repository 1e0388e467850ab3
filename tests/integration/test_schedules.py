"""Schedules on both databases: storing, DST with an injected clock, missed slots, overlapping drains."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib import NotFound, Queue, UnknownJobType, ValidationError
from lib import schedules as sched
from lib.errors import Conflict
from lib.store import schedules as schedule_store
from tests.support.db import count, drain_together, make_queue


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def due_now(queue: Queue, now: datetime) -> int:
    """One drain's schedule step at ``now``; returns jobs created."""
    with queue.engine.begin() as conn:
        return sum(1 for made in queue.schedules.enqueue_due(conn, now) if made.created)


def run_ats(queue: Queue, where: str = "1=1") -> list[str]:
    with queue.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id FROM sluice_jobs WHERE {where}")).scalars().all()
    return sorted(queue.get(str(r)).run_at.strftime("%Y-%m-%dT%H:%M:%SZ") for r in rows)


@pytest.fixture
def clean_declarations() -> Iterator[None]:
    before = set(sched.declared())
    yield
    for name in set(sched.declared()) - before:
        sched.undeclare(name)


def test_put_get_list_delete(queue: Queue) -> None:
    t0 = at("2026-05-01T10:07:00Z")
    made = queue.schedules.put_schedule(
        "reports.daily",
        {"cron": "30 6 * * *", "timezone": "Europe/Paris", "type": "test.greet", "payload": {"name": "x"}},
        now=t0,
    )
    wire = made.to_wire()
    assert wire == {
        "name": "reports.daily",
        "cron": "30 6 * * *",
        "timezone": "Europe/Paris",
        "type": "test.greet",
        "payload": {"name": "x", "times": 1},
        "enabled": True,
        "catchUp": False,
        "priority": 0,
        "maxAttempts": None,
        "timeoutSeconds": None,
        "backoff": None,
        "tenantId": None,
        "nextRunAt": "2026-05-02T04:30:00Z",
        "lastRunAt": None,
        "lastJobId": None,
    }
    queue.schedules.put_schedule("a-first", {"cron": "0 * * * *", "type": "noop", "enabled": False}, now=t0)
    assert [s.name for s in queue.schedules.list_schedules()] == ["a-first", "reports.daily"]
    assert queue.schedules.get_schedule("a-first").next_run_at is None  # disabled
    queue.schedules.delete_schedule("a-first")
    with pytest.raises(NotFound):
        queue.schedules.get_schedule("a-first")
    with pytest.raises(NotFound):
        queue.schedules.delete_schedule("a-first")
    with pytest.raises(NotFound):
        queue.schedules.get_schedule("bad name!")


def test_put_refuses_bad_input(queue: Queue) -> None:
    with pytest.raises(ValidationError) as err:
        queue.schedules.put_schedule("x", {"cron": "61 * * * *", "type": "noop"})
    assert err.value.details[0]["loc"] == "cron"
    with pytest.raises(ValidationError) as err:
        queue.schedules.put_schedule("x", {"cron": "0 * * * *", "type": "noop", "timezone": "Mars/Base"})
    assert err.value.details[0]["loc"] == "timezone"
    with pytest.raises(ValidationError) as err:
        queue.schedules.put_schedule("x", {"cron": "0 * * * *", "type": "noop", "extra": 1})
    assert err.value.details[0]["loc"] == "extra"
    with pytest.raises(UnknownJobType):
        queue.schedules.put_schedule("x", {"cron": "0 * * * *", "type": "nope"})
    with pytest.raises(ValidationError) as err:
        queue.schedules.put_schedule("x", {"cron": "0 * * * *", "type": "test.greet", "payload": {"name": 5}})
    assert err.value.details[0]["loc"] == "payload.name"
    with pytest.raises(ValidationError) as err:
        queue.schedules.put_schedule("x" * 101, {"cron": "0 * * * *", "type": "noop"})
    assert err.value.details[0]["loc"] == "name"
    assert queue.schedules.list_schedules() == []


def test_replace_keeps_last_run_and_recomputes_next(queue: Queue) -> None:
    queue.schedules.put_schedule("s", {"cron": "0 * * * *", "type": "noop"}, now=at("2026-05-01T10:30:00Z"))
    assert due_now(queue, at("2026-05-01T11:00:05Z")) == 1
    first = queue.schedules.get_schedule("s")
    assert first.last_run_at == at("2026-05-01T11:00:00Z") and first.last_job_id is not None
    assert first.next_run_at == at("2026-05-01T12:00:00Z")
    replaced = queue.schedules.put_schedule(
        "s", {"cron": "15 * * * *", "type": "noop"}, now=at("2026-05-01T11:20:00Z")
    )
    assert (replaced.last_run_at, replaced.last_job_id) == (first.last_run_at, first.last_job_id)
    assert replaced.next_run_at == at("2026-05-01T12:15:00Z")
    job = queue.get(first.last_job_id or "")
    assert job.idempotency_key == "schedule:s:2026-05-01T11:00:00Z"
    assert job.run_at == at("2026-05-01T11:00:00Z")


@pytest.mark.parametrize(
    ("zone", "cron", "start", "expected"),
    [
        (
            "Europe/Paris",
            "30 2 * * *",
            "2026-03-28T06:00:00Z",
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        ),
        (
            "Europe/Paris",
            "30 2 * * *",
            "2026-10-24T06:00:00Z",
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            "2026-03-07T12:00:00Z",
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            "2026-10-31T12:00:00Z",
            ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"],
        ),
        (
            "America/New_York",
            "30 1 * * *",
            "2026-10-31T12:00:00Z",
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
        ),
    ],
)
def test_dst_days_run_once_with_drains_every_ten_minutes(
    queue: Queue, zone: str, cron: str, start: str, expected: list[str]
) -> None:
    queue.schedules.put_schedule("nightly", {"cron": cron, "timezone": zone, "type": "noop"}, now=at(start))
    t = at(start)
    created = 0
    while t < at(start) + timedelta(hours=48):
        t += timedelta(minutes=10)
        created += due_now(queue, t)
    assert created == 2
    assert run_ats(queue) == expected
    assert count(queue, "idempotency_key LIKE 'schedule:nightly:%'") == 2


def test_missed_slots_latest_only_or_catch_up(queue: Queue) -> None:
    t0 = at("2026-05-01T00:05:00Z")
    queue.schedules.put_schedule("latest", {"cron": "*/10 * * * *", "type": "noop"}, now=t0)
    queue.schedules.put_schedule("caught", {"cron": "*/10 * * * *", "type": "noop", "catchUp": True}, now=t0)
    assert due_now(queue, at("2026-05-01T01:05:00Z")) == 1 + 6
    assert run_ats(queue, "idempotency_key LIKE 'schedule:latest:%'") == ["2026-05-01T01:00:00Z"]
    assert len(run_ats(queue, "idempotency_key LIKE 'schedule:caught:%'")) == 6
    assert queue.schedules.get_schedule("latest").next_run_at == at("2026-05-01T01:10:00Z")
    assert queue.schedules.get_schedule("caught").next_run_at == at("2026-05-01T01:10:00Z")
    # A long outage: catchUp enqueues at most 100 slots per drain and resumes on the next one.
    later = at("2026-05-03T01:05:00Z")
    assert due_now(queue, later) == 1 + 100
    assert queue.schedules.get_schedule("caught").next_run_at == at("2026-05-01T01:10:00Z") + timedelta(
        minutes=1000
    )
    assert due_now(queue, later) == 100
    assert count(queue, "idempotency_key LIKE 'schedule:latest:%'") == 2


def test_disabled_schedule_never_runs(queue: Queue) -> None:
    queue.schedules.put_schedule(
        "off", {"cron": "* * * * *", "type": "noop", "enabled": False}, now=at("2026-05-01T00:00:00Z")
    )
    assert due_now(queue, at("2026-05-02T00:00:00Z")) == 0
    assert count(queue) == 0


def test_replayed_slot_makes_no_second_job(queue: Queue) -> None:
    queue.schedules.put_schedule(
        "s", {"cron": "0 * * * *", "type": "noop", "tenantId": "t1"}, now=at("2026-05-01T00:30:00Z")
    )
    assert due_now(queue, at("2026-05-01T01:00:00Z")) == 1
    # Another drain that read the schedule before the advance committed enqueues the same slot.
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_schedules SET next_run_at = last_run_at"))
    with queue.engine.begin() as conn:
        again = queue.schedules.enqueue_due(conn, at("2026-05-01T01:00:00Z"))
    assert [e.created for e in again] == [False]
    assert count(queue) == 1
    assert count(queue, "tenant_id = 't1' AND idempotency_key = 'schedule:s:2026-05-01T01:00:00Z'") == 1


def test_concurrent_drains_at_a_slot_boundary_make_one_job(db_url: str) -> None:
    queues = [make_queue(db_url, jobs_db_pool="null") for _ in range(4)]
    try:
        boundary = at("2026-05-01T02:00:00Z")
        queues[0].schedules.put_schedule(
            "tick", {"cron": "0 * * * *", "type": "noop"}, now=boundary - timedelta(minutes=30)
        )
        for q in queues:
            hook = q.drainer.before_claim
            assert isinstance(hook, sched.DueHook)
            hook.clock = lambda: boundary + timedelta(milliseconds=1)
        drain_together(queues, timeout=60, max_jobs=0)
        assert count(queues[0]) == 1
        assert run_ats(queues[0]) == ["2026-05-01T02:00:00Z"]
        assert queues[0].schedules.get_schedule("tick").next_run_at == at("2026-05-01T03:00:00Z")
    finally:
        for q in queues:
            q.engine.dispose()


def test_locked_schedule_is_skipped_by_the_other_drain(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises drains; row locks are PostgreSQL's")
    q = make_queue(db_url)
    try:
        q.schedules.put_schedule("s", {"cron": "0 * * * *", "type": "noop"}, now=at("2026-05-01T00:30:00Z"))
        with q.engine.begin() as first:
            assert len(q.schedules.enqueue_due(first, at("2026-05-01T01:00:01Z"))) == 1
            with q.engine.begin() as second:  # while the first still holds the row
                assert q.schedules.enqueue_due(second, at("2026-05-01T01:00:01Z")) == []
        assert count(q) == 1
    finally:
        q.engine.dispose()


def test_drain_enqueues_and_runs_the_due_slot(queue: Queue) -> None:
    with queue.engine.connect() as conn:
        db_now = schedule_store.db_now(conn)
    # Created ten minutes ago on the database clock: a */5 slot has come due since.
    spec = {"cron": "*/5 * * * *", "type": "test.greet", "payload": {"name": "cron"}}
    queue.schedules.put_schedule("greet", spec, now=db_now - timedelta(minutes=10))
    summary = queue.drain(max_jobs=5)
    assert (summary.processed, summary.succeeded) == (1, 1)
    assert count(queue, "status = 'completed' AND type = 'test.greet'") == 1
    stored = queue.schedules.get_schedule("greet")
    assert stored.last_run_at is not None and stored.next_run_at is not None
    # The latest due slot ran; the next is the one after it.
    assert stored.next_run_at - stored.last_run_at == timedelta(minutes=5)


def test_declared_schedules_sync_on_first_drain(db_url: str, clean_declarations: None) -> None:
    sched.schedule("declared.cleanup", "0 2 * * *", "noop", timezone="America/Toronto", priority=5)
    sched.schedule(
        "declared.cleanup", "0 2 * * *", "noop", timezone="America/Toronto", priority=5
    )  # same: fine
    with pytest.raises(Conflict):
        sched.schedule("declared.cleanup", "0 3 * * *", "noop")
    q = make_queue(db_url)
    try:
        hook = q.drainer.before_claim
        assert isinstance(hook, sched.DueHook)
        hook.clock = lambda: at("2026-05-01T12:00:00Z")
        q.drain(max_jobs=0)
        stored = q.schedules.get_schedule("declared.cleanup")
        assert (stored.timezone, stored.priority, stored.next_run_at) == (
            "America/Toronto",
            5,
            at("2026-05-02T06:00:00Z"),
        )
        # A later process (cold start) with the same declaration keeps the pending slot and lastRunAt.
        with q.engine.begin() as conn:
            conn.execute(sa.text("UPDATE sluice_schedules SET last_run_at = next_run_at"))
        later = make_queue(db_url)
        assert later.schedules.sync_declared(now=at("2026-05-03T12:00:00Z")) == []
        kept = later.schedules.get_schedule("declared.cleanup")
        assert kept.next_run_at == at("2026-05-02T06:00:00Z") and kept.last_run_at == kept.next_run_at
        later.engine.dispose()
    finally:
        q.engine.dispose()


def test_schedule_of_an_unloaded_type_stays_due(queue: Queue) -> None:
    queue.schedules.put_schedule("s", {"cron": "0 * * * *", "type": "noop"}, now=at("2026-05-01T00:30:00Z"))
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_schedules SET type = 'gone.type'"))
    assert due_now(queue, at("2026-05-01T01:00:01Z")) == 0
    assert queue.schedules.get_schedule("s").next_run_at == at("2026-05-01T01:00:00Z")


def test_slots_are_utc_in_wire_form(queue: Queue) -> None:
    made = queue.schedules.put_schedule(
        "tz",
        {"cron": "0 9 * * *", "timezone": "Asia/Kolkata", "type": "noop"},
        now=at("2026-05-01T00:00:00Z"),
    )
    assert made.to_wire()["nextRunAt"] == "2026-05-01T03:30:00Z"
    assert made.next_run_at is not None and made.next_run_at.tzinfo == UTC
