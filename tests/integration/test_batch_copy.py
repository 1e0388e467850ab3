"""Large keyless batches go in by COPY on PostgreSQL (lib/store/jobs.py): the jobs returned are
exactly the rows stored, whatever the payload text holds; keyed batches keep their semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lib import Queue
from lib.models import JobSpec
from lib.store.jobs import COPY_MIN_ROWS
from tests.support.db import count

TRICKY = ["back\\slash", "tab\there", "new\nline", "cr\rhere", "quote\"s", "émoji 🚀", "\\N", "a\\tb", ""]


def test_a_large_keyless_batch_stores_what_it_returns(queue: Queue) -> None:
    run_at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    specs = [
        JobSpec.model_validate(
            {
                "type": "noop",
                "payload": {"text": TRICKY[i % len(TRICKY)], "n": i, "nested": {"list": [1.5, None, True]}},
                "correlationId": f"corr\t{i}\\x" if i % 3 == 0 else None,
                "tenantId": "acme" if i % 2 else None,
                "priority": i % 7,
                **({"runAt": run_at.isoformat()} if i % 5 == 0 else {"delaySeconds": i % 4}),
            }
        )
        for i in range(COPY_MIN_ROWS + 20)
    ]
    made = queue.submit_many(specs)
    assert len(made) == len(specs) and all(e.created for e in made)
    assert count(queue) == len(specs)
    for spec, enqueued in zip(specs, made, strict=True):
        job = enqueued.job
        assert queue.get(job.id) == job
        assert job.payload == spec.payload
        if spec.run_at is not None:
            assert job.run_at == run_at
        else:
            assert job.run_at == job.created_at + timedelta(seconds=spec.delay_seconds or 0)
    assert len({e.job.created_at for e in made}) == 1


def test_a_large_keyed_batch_reposted_returns_the_existing_jobs(queue: Queue) -> None:
    keys = [f"k{i}" for i in range(COPY_MIN_ROWS + 5)]
    specs = [JobSpec.model_validate({"type": "noop", "idempotencyKey": key}) for key in keys]
    first = queue.submit_many(specs)
    again = queue.submit_many(specs)
    assert all(e.created for e in first) and not any(e.created for e in again)
    assert [e.job.id for e in again] == [e.job.id for e in first]
    assert count(queue) == len(specs)


def test_a_large_batch_keeps_its_flow_control_fields(queue: Queue) -> None:
    """COPY writes the flow columns too: a large batch of keyed, dependent and called-back jobs
    stores what it returns (they were once dropped, and the limit per key went unenforced)."""
    queue.settings = queue.settings.model_copy(update={"jobs_http_allow_hosts": "127.0.0.1"})
    first = queue.enqueue("noop", {})
    specs = [
        JobSpec.model_validate(
            {
                "type": "noop",
                "payload": {"n": i},
                **({"concurrencyKey": f"k\t{i % 3}", "concurrencyLimit": 2} if i % 2 else {}),
                **({"after": [first.id]} if i % 5 == 0 else {}),
                **({"callbackUrl": "http://127.0.0.1:9/done"} if i % 7 == 0 else {}),
            }
        )
        for i in range(COPY_MIN_ROWS + 20)
    ]
    made = queue.submit_many(specs)
    for spec, enqueued in zip(specs, made, strict=True):
        job = enqueued.job
        assert queue.get(job.id) == job
        assert (job.concurrency_key, job.after, job.callback_url) == (
            spec.concurrency_key,
            [first.id] if spec.after else None,
            spec.callback_url,
        )
        assert job.concurrency_limit == (2 if spec.concurrency_key else None)
    assert count(queue, "concurrency_key IS NOT NULL") == (COPY_MIN_ROWS + 20) // 2
