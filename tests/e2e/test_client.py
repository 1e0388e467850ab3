"""lib.client.SluiceClient against the real app on a free port (and, for retries, a real HTTP
server that answers 503 first)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lib.client import ApiError, SluiceClient, WaitTimeout
from lib.errors import (
    Conflict,
    Forbidden,
    NotFound,
    SluiceError,
    Unauthorized,
    Unavailable,
    UnknownJobType,
    ValidationError,
)
from lib.models import JobSpec
from tests.e2e.appserver import (
    ADMIN_KEY,
    TENANT_KEY,
    free_port,
    serve_app,
    settings_for,
    sqlite_copy,
)
from tests.support.db import count, make_queue


@pytest.fixture
def served(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    url = sqlite_copy(sqlite_template, tmp_path)
    with serve_app(settings_for(url)) as base:
        yield base, url


def client(base: str, key: str = ADMIN_KEY, **kwargs: Any) -> SluiceClient:
    return SluiceClient(base, key, retry_delay=0.01, **kwargs)


def test_enqueue_process_wait_and_read_back(served: tuple[str, str]) -> None:
    base, url = served
    c = client(base)
    job = c.enqueue(type="test.greet", payload={"name": "ada"})
    assert job.status == "pending"
    assert job.idempotency_key  # generated, so retrying the request is safe
    summary = c.process(max_jobs=5)
    assert (summary.processed, summary.succeeded, summary.stopped_by) == (1, 1, "empty")
    done = c.wait(job.id, timeout=5, poll=0.05)
    assert done.status == "completed"
    assert done.result == {"greeting": "hello ada", "attempt": 1}
    assert done.progress == 100
    q = make_queue(url)
    assert count(q, "status = 'completed'") == 1
    q.engine.dispose()


def test_enqueue_forms_and_idempotency(served: tuple[str, str]) -> None:
    base, url = served
    c = client(base)
    first = c.enqueue({"type": "noop", "idempotencyKey": "order-7", "delaySeconds": 3600})
    again = c.enqueue(JobSpec(type="noop", idempotency_key="order-7"))
    assert again.id == first.id
    assert first.run_at > first.created_at  # the delay arrived
    jobs = c.enqueue_many([{"type": "noop"}, JobSpec(type="test.fail", priority=5)])
    assert [j.type for j in jobs] == ["noop", "test.fail"]
    assert all(j.idempotency_key for j in jobs)
    q = make_queue(url)
    assert count(q) == 3
    assert count(q, "idempotency_key = 'order-7'") == 1
    q.engine.dispose()


def test_list_status_cancel_retry(served: tuple[str, str]) -> None:
    base, url = served
    c = client(base)
    keep = c.enqueue(type="noop", delay_seconds=600)
    doomed = c.enqueue(type="test.fail", max_attempts=1)
    c.process()
    assert c.get(doomed.id).status == "failed"

    status = c.status()
    assert status.counts["failed"] == 1 and status.scheduled == 1
    assert status.last_drain is not None and status.last_drain.source == "api"

    page = c.list(status="failed")
    assert [j.id for j in page.jobs] == [doomed.id] and page.next_cursor is None
    first = c.list(limit=1)
    assert len(first.jobs) == 1 and first.next_cursor
    second = c.list(limit=1, cursor=first.next_cursor)
    assert {first.jobs[0].id, second.jobs[0].id} == {keep.id, doomed.id}

    retried = c.retry(doomed.id)
    assert (retried.status, retried.attempts) == ("pending", 0)
    assert c.cancel(keep.id).status == "cancelled"
    q = make_queue(url)
    assert count(q, "status = 'pending'") == 1
    assert count(q, "status = 'cancelled'") == 1
    q.engine.dispose()


def test_steps_of_a_sleeping_job(served: tuple[str, str], tmp_path: Path) -> None:
    base, _ = served
    c = client(base)
    sleeper = c.enqueue(type="test.steps", payload={"file": str(tmp_path / "s.log"), "sleep": 600})
    c.process()
    assert [step["name"] for step in c.steps(sleeper.id)] == ["one", "two", "sleep#1"]
    assert c.get(sleeper.id).attempts == 0


def test_attempts_and_bulk_retry_cancel(served: tuple[str, str]) -> None:
    base, url = served
    c = client(base)
    doomed = [c.enqueue(type="test.permanent") for _ in range(2)]
    waiting = c.enqueue(type="noop", delay_seconds=600)
    c.process()
    (attempt,) = c.attempts(doomed[0].id)
    assert attempt["outcome"] == "failed" and "PermanentError" in attempt["traceback"]
    assert c.steps(doomed[0].id) == []
    assert c.retry_many(type="test.permanent", dry_run=True).model_dump() == {"matched": 2, "changed": 0}
    assert c.retry_many(type="test.permanent", status="failed").changed == 2
    assert c.cancel_many(ids=[waiting.id, doomed[0].id]).changed == 2
    with pytest.raises(ValidationError):
        c.cancel_many(dry_run=True)
    q = make_queue(url)
    assert count(q, "status = 'cancelled'") == 2 and count(q, "status = 'pending'") == 1
    q.engine.dispose()


def test_errors_are_lib_exceptions(served: tuple[str, str]) -> None:
    base, _ = served
    c = client(base)
    with pytest.raises(NotFound):
        c.get("01a20000-0000-7000-8000-000000000000")
    done = c.enqueue(type="noop")
    c.process()
    with pytest.raises(Conflict) as conflict:
        c.cancel(done.id)
    assert conflict.value.details == {"status": "completed"}
    with pytest.raises(UnknownJobType):
        c.enqueue(type="no.such.type")
    with pytest.raises(ValidationError) as invalid:
        c.enqueue(type="test.greet", payload={"name": 5})
    assert invalid.value.code == "validation_error"
    assert any(d["loc"].startswith("payload") for d in invalid.value.details)
    with pytest.raises(ValidationError):  # refused before sending: no coercion of "5"
        c.enqueue(type="noop", priority="5")
    with pytest.raises(Unauthorized):
        client(base, "wrong-key").status()
    with pytest.raises(Forbidden):
        client(base, TENANT_KEY).process()
    with pytest.raises(ValidationError):
        c.list(limit=0)
    with pytest.raises(ApiError) as other:  # a code without a class of its own
        c._call("DELETE", "/api/jobs/status")
    assert isinstance(other.value, SluiceError)
    assert (other.value.status, other.value.code) == (405, "method_not_allowed")


def test_tenant_client_sees_only_its_jobs(served: tuple[str, str]) -> None:
    base, _ = served
    admin, tenant = client(base), client(base, TENANT_KEY)
    other = admin.enqueue(type="noop", tenant_id="globex")
    mine = tenant.enqueue(type="noop")
    assert mine.tenant_id == "acme"
    assert [j.id for j in tenant.list().jobs] == [mine.id]
    with pytest.raises(NotFound):
        tenant.get(other.id)
    assert tenant.status().counts["pending"] == 1


def test_wait_times_out_with_last_state(served: tuple[str, str]) -> None:
    base, _ = served
    c = client(base)
    job = c.enqueue(type="noop", delay_seconds=600)
    with pytest.raises(WaitTimeout) as timeout:
        c.wait(job.id, timeout=0.2, poll=0.05)
    assert isinstance(timeout.value, TimeoutError)
    assert timeout.value.job.status == "pending"


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 `unavailable` to the first two POSTs, then 201; remembers every body."""

    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        if len(self.bodies) <= 2:
            self._answer(503, {"error": {"code": "unavailable", "message": "database down"}})
        else:
            job = {
                "id": "01a20000-0000-7000-8000-000000000001", "type": body["type"], "payload": {},
                "status": "pending", "priority": 0, "attempts": 0, "maxAttempts": 3,
                "timeoutSeconds": 60, "runAt": "2026-01-01T00:00:00Z", "createdAt": "2026-01-01T00:00:00Z",
                "startedAt": None, "finishedAt": None, "lastError": None, "result": None,
                "progress": None, "tenantId": None, "correlationId": "c",
                "idempotencyKey": body["idempotencyKey"],
            }  # fmt: skip
            self._answer(201, job)

    def _answer(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_enqueue_retries_503_with_the_same_idempotency_key() -> None:
    bodies: list[dict[str, Any]] = []
    handler = type("Handler", (_Flaky,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        job = client(base, retries=3).enqueue(type="noop")
        assert len(bodies) == 3
        assert len({b["idempotencyKey"] for b in bodies}) == 1
        assert job.idempotency_key == bodies[0]["idempotencyKey"]
        bodies.clear()
        with pytest.raises(Unavailable):
            client(base, retries=1).enqueue(type="noop")
        assert len(bodies) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_server_and_database(sqlite_template: Path, tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot reach"):
        client(f"http://127.0.0.1:{free_port()}", retries=2).status()
    # A real app whose database is down answers 503 unavailable; the client retries, then raises.
    down = settings_for("postgresql://postgres@127.0.0.1:1/none", jobs_db_pool="null")
    with serve_app(down) as base, pytest.raises(Unavailable):
        client(base, retries=1).status()
