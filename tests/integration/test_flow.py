"""Flow control: concurrency keys, fair share, debounce, dependencies (after) and callbacks, on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Queue
from lib.errors import ValidationError
from lib.models import JobSpec
from lib.schema import jobs
from lib.store import claim as claim_store
from tests.support.db import count, make_queue
from tests.support.drainers import run_drainers, runs_per_job

# -- a loopback receiver ------------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """Counts requests in flight per ?key= (the most ever seen at once), and keeps each request."""

    daemon_threads = True

    def __init__(self, hold: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hold = hold
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.seen: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        key = self.path.partition("key=")[2]
        server = self.server
        with server.lock:
            server.seen.append((dict(self.headers.items()), body))
            server.in_flight[key] += 1
            server.most[key] = max(server.most[key], server.in_flight[key])
        time.sleep(server.hold)
        with server.lock:
            server.in_flight[key] -= 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = handle_any

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(hold: float = 0.0) -> Iterator[Receiver]:
    server = Receiver(hold)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve(0.02)


def _claim(queue: Queue, limit: int) -> list[claim_store.Claimed]:
    with queue.engine.begin() as conn:
        return claim_store.claim_batch(conn, limit, uuid.uuid4(), 30)


# -- concurrency keys -----------------------------------------------------------------------------


def test_eight_overlapping_drains_keep_each_key_within_its_limit(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    queue = make_queue(db_url)
    path = tmp_path / "runs.log"
    specs = [
        JobSpec(
            type="test.visit",
            payload={"file": str(path), "url": receiver.url, "key": f"k{i % 5}"},
            concurrency_key=f"k{i % 5}",
            concurrency_limit=2,
        )
        for i in range(500)
    ]
    ids = {job.id for job in queue.enqueue_many(specs)}

    reports = run_drainers(db_url, 8, {"jobs_batch_size": 20, "jobs_db_pool": "null"})

    runs = runs_per_job(path)
    assert set(runs) == ids and set(runs.values()) == {1}
    assert sum(processed for _, processed, _ in reports) == 500
    assert count(queue, "status = 'completed' AND attempts = 1") == 500
    assert set(receiver.most) == {f"k{i}" for i in range(5)}
    assert max(receiver.most.values()) <= 2, receiver.most
    queue.engine.dispose()


def test_a_key_at_its_limit_waits_due_with_no_attempt_counted(queue: Queue) -> None:
    keyed = [queue.enqueue("noop", {"n": i}, concurrency_key="k", concurrency_limit=2) for i in range(5)]
    other = queue.enqueue("noop", {}, concurrency_key="k", tenant_id="t2")
    plain = queue.enqueue("noop", {})

    first = _claim(queue, 100)
    assert {str(job.id) for job in first} == {keyed[0].id, keyed[1].id, other.id, plain.id}
    assert _claim(queue, 100) == []  # k is at 2 processing; t2's k is its own key
    assert count(queue, "status = 'pending' AND attempts = 0 AND concurrency_key = 'k'") == 3
    # One of the two ends: exactly one more of k may start.
    with queue.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == first[0].id).values(status="completed"))
    assert [str(job.id) for job in _claim(queue, 100)] == [keyed[2].id]
    assert count(queue, "status = 'processing' AND concurrency_key = 'k' AND tenant_id IS NULL") == 2


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_claims_count_a_key_exactly(queue: Queue) -> None:
    """READ COMMITTED + SKIP LOCKED alone would let two claims both see 0 processing and take 2
    each; the keyed claim's lock makes the second count after the first commits."""
    for i in range(6):
        queue.enqueue("noop", {"n": i}, concurrency_key="k", concurrency_limit=2)
    got: list[int] = []
    with queue.engine.connect() as first:
        tx = first.begin()
        held = claim_store.claim_batch(first, 100, uuid.uuid4(), 30)
        assert len(held) == 2

        def second() -> None:
            got.append(len(_claim(queue, 100)))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waits for the first claim's transaction
        tx.commit()
        thread.join(10)
    assert got == [0]
    assert count(queue, "status = 'processing'") == 2


# -- fair share -----------------------------------------------------------------------------------


def test_one_tenants_backlog_does_not_hold_another_back(queue: Queue) -> None:
    for start in range(0, 100_000, 1000):
        queue.enqueue_many(
            [JobSpec(type="noop", payload={"n": n}, tenant_id="a") for n in range(start, start + 1000)]
        )
    late = {job.id for job in queue.enqueue_many([JobSpec(type="noop", tenant_id="b") for _ in range(10)])}

    batch = _claim(queue, 100)

    assert late <= {str(job.id) for job in batch}
    tenants = Counter(job.tenant_id for job in batch)
    # Each tenant's window is 5/4 of its share of the batch (63 of 100 here).
    assert tenants == {"a": 63, "b": 10}
    if queue.dialect == "postgresql":
        with queue.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE sluice_jobs"))
            plan = "\n".join(
                conn.execute(
                    sa.text(f"EXPLAIN {claim_store._CLAIM_PG.element.text}"),
                    {
                        "limit": 100,
                        "grace": 30,
                        "token": uuid.uuid4(),
                        "hold": 120,
                        "tenants": 100,
                        "keyed": False,
                    },
                ).scalars()
            )
        assert "Seq Scan on sluice_jobs" not in plan, plan
        assert "ix_sluice_jobs_fair" in plan, plan


# -- debounce -------------------------------------------------------------------------------------


def test_a_burst_with_one_debounce_key_runs_once_with_the_last_payload(queue: Queue, tmp_path: Path) -> None:
    path = tmp_path / "runs.log"
    made = [
        queue.submit(
            JobSpec(
                type="test.record", payload={"file": str(path), "n": n}, debounce={"key": "d", "seconds": 2}
            )
        )
        for n in range(100)
    ]
    assert made[0].created and not any(item.created for item in made[1:])
    assert {item.job.id for item in made} == {made[0].job.id}
    assert made[-1].job.payload["n"] == 99
    assert count(queue) == 1
    assert queue.drain(max_jobs=10).processed == 0  # due 2 s after the last enqueue
    # Two seconds pass (the database's clock, moved instead of waited for).
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_jobs SET run_at = created_at"))
    assert queue.drain(max_jobs=10).processed == 1
    job = queue.get(made[0].job.id)
    assert job.status == "completed" and job.payload["n"] == 99 and job.debounce_key == "d"
    assert path.read_text().count("\n") == 1
    # The key is free again once its job left pending: the next burst is a new job.
    assert queue.submit(JobSpec(type="noop", debounce={"key": "d", "seconds": 1})).created


def test_debounce_keys_are_per_tenant(queue: Queue) -> None:
    a = queue.submit(JobSpec(type="noop", tenant_id="a", debounce={"key": "d", "seconds": 5}))
    b = queue.submit(JobSpec(type="noop", tenant_id="b", debounce={"key": "d", "seconds": 5}))
    assert a.created and b.created and a.job.id != b.job.id


# -- after ----------------------------------------------------------------------------------------


def test_a_chain_runs_in_order(queue: Queue) -> None:
    a = queue.enqueue("test.greet", {"name": "a"})
    b = queue.enqueue("test.greet", {"name": "b"}, after=[a.id])
    c = queue.enqueue("test.greet", {"name": "c"}, after=[b.id])
    assert b.after == [a.id] and b.run_at.year == 9999
    assert queue.drain(max_jobs=1).processed == 1
    assert queue.get(b.id).run_at.year < 9999 and queue.get(c.id).run_at.year == 9999
    queue.drain(max_jobs=10)
    done = [queue.get(j.id) for j in (a, b, c)]
    assert [j.status for j in done] == ["completed"] * 3
    assert done[0].finished_at <= done[1].started_at and done[1].finished_at <= done[2].started_at  # type: ignore[operator]


def test_fan_in_waits_for_every_dependency(queue: Queue) -> None:
    a = queue.enqueue("test.greet", {"name": "a"})
    b = queue.enqueue("test.later", {"seconds": 3600})
    c = queue.enqueue("test.greet", {"name": "c"}, after=[a.id, b.id])
    queue.drain(max_jobs=10)
    assert queue.get(a.id).status == "completed" and queue.get(b.id).status == "pending"
    assert queue.get(c.id).status == "pending" and queue.get(c.id).attempts == 0
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sluice_jobs SET status = 'completed' WHERE type = 'test.later'"))
    queue.drain(max_jobs=10)
    assert queue.get(c.id).status == "completed"


def test_a_failed_dependency_cancels_its_dependants_transitively(queue: Queue) -> None:
    a = queue.enqueue("test.permanent", {})
    b = queue.enqueue("test.greet", {"name": "b"}, after=[a.id])
    c = queue.enqueue("test.greet", {"name": "c"}, after=[b.id])
    queue.drain(max_jobs=10)
    got = {j.id: queue.get(j.id) for j in (a, b, c)}
    assert [got[j.id].status for j in (a, b, c)] == ["failed", "cancelled", "cancelled"]
    assert got[b.id].last_error == f"dependency {a.id} ended failed"
    assert got[c.id].last_error == f"dependency {b.id} ended cancelled"
    assert got[b.id].attempts == 0 and got[c.id].attempts == 0
    # Naming a job that already failed cancels at once.
    d = queue.enqueue("noop", {}, after=[a.id])
    assert d.status == "cancelled" and d.last_error == f"dependency {a.id} ended failed"


def test_a_completed_dependency_lets_a_new_job_run_at_once(queue: Queue) -> None:
    a = queue.enqueue("noop", {})
    queue.drain()
    b = queue.enqueue("noop", {}, after=[a.id])
    assert b.status == "pending" and b.run_at.year < 9999
    assert queue.drain().processed == 1


def test_after_names_only_the_tenants_own_existing_jobs(queue: Queue) -> None:
    mine = queue.enqueue("noop", {}, tenant_id="t1")
    theirs = queue.enqueue("noop", {}, tenant_id="t2")
    with pytest.raises(ValidationError) as unknown:
        queue.enqueue("noop", {}, tenant_id="t1", after=[mine.id, str(uuid.uuid4())])
    assert unknown.value.details == [{"loc": "after.1", "msg": "no such job"}]
    with pytest.raises(ValidationError):
        queue.enqueue("noop", {}, tenant_id="t1", after=[theirs.id])
    with pytest.raises(ValidationError):
        queue.enqueue("noop", {}, tenant_id="t1", after=["not-an-id"])
    assert count(queue) == 2


# -- callbacks ------------------------------------------------------------------------------------


def _allow_loopback(queue: Queue) -> None:
    update = {"jobs_http_allow_hosts": "127.0.0.1", "jobs_http_signing_secret": "s3cret"}
    queue.settings = queue.settings.model_copy(update=update)
    queue.drainer.settings = queue.settings


def test_a_callback_is_posted_once_per_end(queue: Queue) -> None:
    _allow_loopback(queue)
    for server in _serve():
        ok = queue.enqueue("test.greet", {"name": "x"}, callback_url=server.url)
        bad = queue.enqueue("test.permanent", {}, callback_url=server.url)
        queue.drain(max_jobs=10)
        queue.drain(max_jobs=10)
        assert queue.drain(max_jobs=10).processed == 0
        by_job = {
            headers["Sluice-Callback-For"]: (headers, json.loads(body)) for headers, body in server.seen
        }
        assert len(server.seen) == 2 and set(by_job) == {ok.id, bad.id}
        headers, body = by_job[ok.id]
        assert (
            body["id"] == ok.id and body["status"] == "completed" and body["result"]["greeting"] == "hello x"
        )
        assert headers["Sluice-Signature"].startswith("v1=")
        assert by_job[bad.id][1]["status"] == "failed"
        assert count(queue, "type = 'sluice.callback' AND status = 'completed'") == 2


def test_a_callback_url_follows_the_http_rules(queue: Queue) -> None:
    with pytest.raises(ValidationError):
        queue.enqueue("noop", {}, callback_url="ftp://example.com/x")
    with pytest.raises(ValidationError):
        queue.enqueue("noop", {}, callback_url="http://169.254.169.254/latest")


def test_a_sweep_makes_what_a_killed_drain_did_not(queue: Queue) -> None:
    """Outcome committed, drain killed before its side effects: the next drain's sweep makes
    them (the release of a dependant here)."""
    a = queue.enqueue("noop", {})
    b = queue.enqueue("noop", {}, after=[a.id])
    queue.drainer.on_settle, hook = None, queue.drainer.on_settle
    queue.drain(max_jobs=1)
    assert queue.get(b.id).run_at.year == 9999
    queue.drainer.on_settle = hook
    assert queue.drain(max_jobs=10).processed == 1
    assert queue.get(b.id).status == "completed"


# -- over HTTP ------------------------------------------------------------------------------------

ADMIN = {"x-api-key": "k1"}


def test_the_api_takes_and_shows_the_flow_fields(client: Any, queue: Queue) -> None:
    body = {"type": "test.greet", "payload": {"name": "a"}, "concurrencyKey": "u1", "concurrencyLimit": 3}
    first = client.post("/api/jobs", json=body, headers=ADMIN)
    assert first.status_code == 201
    made = first.get_json()
    assert (made["concurrencyKey"], made["concurrencyLimit"], made["after"]) == ("u1", 3, None)

    burst = {"type": "test.greet", "payload": {"name": "b"}, "debounce": {"key": "d", "seconds": 5}}
    assert client.post("/api/jobs", json=burst, headers=ADMIN).status_code == 201
    again = client.post("/api/jobs", json={**burst, "payload": {"name": "c"}}, headers=ADMIN)
    assert again.status_code == 200 and again.get_json()["payload"] == {"name": "c", "times": 1}

    waiting = client.post("/api/jobs", json={"type": "noop", "after": [made["id"]]}, headers=ADMIN)
    assert waiting.status_code == 201 and waiting.get_json()["after"] == [made["id"]]

    batch = {"jobs": [{"type": "noop", "concurrencyKey": "u2"}, {"type": "noop", "after": [made["id"]]}]}
    answer = client.post("/api/jobs/batch", json=batch, headers=ADMIN)
    assert answer.status_code == 201
    assert [j["concurrencyLimit"] for j in answer.get_json()["jobs"]] == [1, None]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"concurrencyLimit": 2}, None),
        ({"concurrencyKey": "k", "concurrencyLimit": 0}, "concurrencyLimit"),
        ({"concurrencyKey": ""}, "concurrencyKey"),
        ({"debounce": {"key": "d", "seconds": 0}}, "debounce.seconds"),
        ({"debounce": {"key": "d", "seconds": 5}, "idempotencyKey": "i"}, None),
        ({"after": []}, "after"),
        ({"after": [str(uuid.uuid4())]}, "after.0"),
        ({"after": ["x"] * 101}, "after"),
        ({"callbackUrl": "file:///etc/passwd"}, "callbackUrl"),
    ],
)
def test_the_api_refuses_bad_flow_fields(
    client: Any, queue: Queue, body: dict[str, Any], loc: str | None
) -> None:
    answer = client.post("/api/jobs", json={"type": "noop", **body}, headers=ADMIN)
    assert answer.status_code == 422, answer.get_json()
    details = answer.get_json()["error"].get("details") or []
    if loc is not None:
        assert loc in [d["loc"] for d in details], details
    assert count(queue) == 0


def test_the_openapi_document_covers_the_flow_fields(client: Any) -> None:
    doc = client.get("/api/openapi.json").get_json()
    text = str(doc)
    for name in ("concurrencyKey", "concurrencyLimit", "debounce", "after", "callbackUrl", "debounceKey"):
        assert f"'{name}'" in text, name


def test_a_retried_dependant_waits_for_its_dependencies_again(queue: Queue) -> None:
    a = queue.enqueue("test.permanent", {})
    b = queue.enqueue("test.greet", {"name": "b"}, after=[a.id])
    queue.drain(max_jobs=10)
    assert queue.get(b.id).status == "cancelled"
    # Both retried: b must not run before a completes (a fails again, so b is cancelled again).
    queue.retry(a.id)
    retried = queue.retry(b.id)
    assert retried.status == "pending" and retried.run_at.year == 9999
    queue.drain(max_jobs=10)
    assert queue.get(a.id).status == "failed"
    again = queue.get(b.id)
    assert again.status == "cancelled" and again.attempts == 0


def test_a_callback_refused_by_a_changed_allow_list_does_not_block_the_sweep(queue: Queue) -> None:
    _allow_loopback(queue)
    job = queue.enqueue("noop", {}, callback_url="http://127.0.0.1:9/done")
    blocked = queue.enqueue("noop", {}, after=[job.id])
    queue.settings = queue.settings.model_copy(update={"jobs_http_allow_hosts": ""})
    queue.drain(max_jobs=10)
    assert queue.get(blocked.id).status == "completed"
    assert count(queue, "type = 'sluice.callback'") == 0
    assert count(queue, "callback_sent_at IS NOT NULL") == 1


def test_a_schedule_passes_its_concurrency_key_and_callback_to_its_jobs(queue: Queue) -> None:
    _allow_loopback(queue)
    spec = {
        "cron": "* * * * *",
        "type": "noop",
        "concurrencyKey": "nightly",
        "callbackUrl": "http://127.0.0.1:9/x",
    }
    queue.schedules.put_schedule("flow", spec, now=datetime(2026, 5, 1, 10, 0, tzinfo=UTC))
    with queue.engine.begin() as conn:
        made = queue.schedules.enqueue_due(conn, datetime(2026, 5, 1, 10, 1, 30, tzinfo=UTC))
    assert [(m.job.concurrency_key, m.job.concurrency_limit, m.job.callback_url) for m in made] == [
        ("nightly", 1, "http://127.0.0.1:9/x")
    ]
    with pytest.raises(ValidationError):
        queue.schedules.put_schedule(
            "bad", {"cron": "* * * * *", "type": "noop", "debounce": {"key": "d", "seconds": 5}}
        )


def test_a_keys_backlog_does_not_hold_plain_jobs_back(queue: Queue) -> None:
    specs = [JobSpec(type="noop", payload={"n": n}, concurrency_key="k") for n in range(1000)]
    queue.enqueue_many(specs)
    plain = queue.enqueue("noop", {})
    batch = _claim(queue, 50)
    assert plain.id in {str(job.id) for job in batch}
    assert len(batch) == 2  # and exactly one of k (its limit)


def test_concurrent_enqueues_with_one_debounce_key_make_one_job(db_url: str) -> None:
    queues = [make_queue(db_url) for _ in range(8)]
    barrier = threading.Barrier(len(queues))
    made: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def burst(q: Queue, who: int) -> None:
        try:
            barrier.wait()
            for n in range(20):
                spec = JobSpec(
                    type="noop", payload={"who": who, "n": n}, debounce={"key": "d", "seconds": 60}
                )
                item = q.submit(spec)
                made.append((item.job.id, item.created))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(q, i)) for i, q in enumerate(queues)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert len(made) == 160 and len({job_id for job_id, _ in made}) == 1
    assert sum(created for _, created in made) == 1
    assert count(queues[0]) == 1
    for q in queues:
        q.engine.dispose()
