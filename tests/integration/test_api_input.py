"""Bad input never writes: each refusal has its status, code and location, and the table stays empty.
Also: concurrent enqueues with one idempotency key, and all-or-nothing batches."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lib import Queue
from tests.support.api import ADMIN, error_of
from tests.support.db import count


def nested(levels: int) -> dict[str, Any]:
    """A payload of ``levels`` nested objects ({} is one level)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def greet(**extra: Any) -> bytes:
    return json.dumps({"type": "test.greet", "payload": {"name": "ada"}, **extra}).encode()


# (id, raw body, status, code, loc of the first detail or None)
BAD_BODIES: list[tuple[str, bytes, int, str, str | None]] = [
    ("too-large", greet(correlationId="x", payload={"name": "a" * 300_000}), 413, "payload_too_large", None),
    ("malformed", b'{"type": "noop"', 400, "bad_request", None),
    ("empty", b"", 400, "bad_request", None),
    ("nan", b'{"type": "test.greet", "payload": {"name": "a", "times": NaN}}', 400, "bad_request", None),
    ("infinity", b'{"type": "noop", "priority": Infinity}', 400, "bad_request", None),
    ("minus-infinity", b'{"type": "noop", "priority": -Infinity}', 400, "bad_request", None),
    ("invalid-utf8", b'{"type": "noop", "payload": {"x": "\xff\xfe"}}', 400, "bad_request", None),
    ("huge-integer", b'{"type": "noop", "priority": ' + b"9" * 5000 + b"}", 400, "bad_request", None),
    ("array", b'[{"type": "noop"}]', 400, "bad_request", None),
    ("string", b'"noop"', 400, "bad_request", None),
    ("null", b"null", 400, "bad_request", None),
    ("depth-33", json.dumps({"type": "noop", "payload": nested(33)}).encode(), 422, "validation_error", None),
    (
        "very-deep",
        b'{"type": "noop", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        422,
        "validation_error",
        None,
    ),
    (
        "nul-in-key",
        json.dumps({"type": "noop", "payload": {"a\u0000b": 1}}).encode(),
        422,
        "validation_error",
        "payload",
    ),
    ("nul-in-value", greet(payload={"name": "a\u0000"}), 422, "validation_error", "payload.name"),
    ("nul-in-type", b'{"type": "no\\u0000op"}', 422, "validation_error", "type"),
    ("nul-in-top-key", b'{"type": "noop", "x\\u0000": 1}', 422, "validation_error", "body"),
    (
        "surrogate-in-value",
        b'{"type": "noop", "payload": {"x": "\\ud800"}}',
        422,
        "validation_error",
        "payload.x",
    ),
    ("surrogate-in-type", b'{"type": "\\udfffnoop"}', 422, "validation_error", "type"),
    ("surrogate-in-key", b'{"type": "noop", "payload": {"\\ud83d": 1}}', 422, "validation_error", "payload"),
    ("float-overflow", b'{"type": "noop", "payload": {"x": 1e400}}', 400, "bad_request", None),
    ("unknown-field", greet(bogus=1), 422, "validation_error", "bogus"),
    ("snake-case-field", greet(max_attempts=2), 422, "validation_error", "max_attempts"),
    ("string-priority", greet(priority="5"), 422, "validation_error", "priority"),
    ("float-priority", greet(priority=5.0), 422, "validation_error", "priority"),
    ("bool-priority", greet(priority=True), 422, "validation_error", "priority"),
    ("priority-range", greet(priority=1001), 422, "validation_error", "priority"),
    ("max-attempts-0", greet(maxAttempts=0), 422, "validation_error", "maxAttempts"),
    ("timeout-901", greet(timeoutSeconds=901), 422, "validation_error", "timeoutSeconds"),
    ("delay-negative", greet(delaySeconds=-1), 422, "validation_error", "delaySeconds"),
    ("delay-too-long", greet(delaySeconds=315_360_001), 422, "validation_error", "delaySeconds"),
    ("backoff-strategy", greet(backoff={"strategy": "random"}), 422, "validation_error", "backoff.strategy"),
    ("backoff-unknown", greet(backoff={"delay": 1}), 422, "validation_error", "backoff.delay"),
    ("run-at-no-offset", greet(runAt="2030-01-01T00:00:00"), 422, "validation_error", "runAt"),
    ("run-at-1969", greet(runAt="1969-12-31T23:59:59Z"), 422, "validation_error", "runAt"),
    ("run-at-utc-1969", greet(runAt="1970-01-01T00:30:00+01:00"), 422, "validation_error", "runAt"),
    ("run-at-overflow", greet(runAt="9999-12-31T23:59:59-01:00"), 422, "validation_error", "runAt"),
    ("run-at-10000", greet(runAt="10000-01-01T00:00:00Z"), 422, "validation_error", "runAt"),
    ("run-at-garbage", greet(runAt="tomorrow"), 422, "validation_error", "runAt"),
    ("run-at-number", greet(runAt=1893456000), 422, "validation_error", "runAt"),
    (
        "run-at-and-delay",
        greet(runAt="2030-01-01T00:00:00Z", delaySeconds=5),
        422,
        "validation_error",
        "body",
    ),
    ("empty-key", greet(idempotencyKey=""), 422, "validation_error", "idempotencyKey"),
    ("long-tenant", greet(tenantId="t" * 256), 422, "validation_error", "tenantId"),
    ("payload-not-object", b'{"type": "noop", "payload": [1]}', 422, "validation_error", "payload"),
    ("no-type", b'{"payload": {}}', 422, "validation_error", "type"),
    ("unknown-type", b'{"type": "nope"}', 422, "unknown_job_type", "type"),
    ("bad-payload", greet(payload={"name": 5}), 422, "validation_error", "payload.name"),
    ("payload-extra", greet(payload={"name": "a", "x": 1}), 422, "validation_error", "payload.x"),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "loc"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_enqueue_is_refused_and_writes_nothing(
    client: FlaskClient, queue: Queue, body: bytes, status: int, code: str, loc: str | None
) -> None:
    response = client.post("/api/jobs", data=body, headers={**ADMIN, "Content-Type": "application/json"})
    error = error_of(response, status, code)
    if loc is not None:
        assert error["details"][0]["loc"] == loc, error
        assert all(set(d) == {"loc", "msg"} for d in error["details"])
    assert count(queue) == 0


def test_depth_and_nul_are_reported_where_they_are(client: FlaskClient, queue: Queue) -> None:
    deep = client.post("/api/jobs", json={"type": "noop", "payload": nested(33)}, headers=ADMIN)
    error = error_of(deep, 422, "validation_error")
    assert error["details"][0]["loc"].startswith("payload.a.a")
    assert "32" in error["details"][0]["msg"]
    error = error_of(
        client.post("/api/jobs", json={"type": "noop", "payload": {"k": ["ok", "b\u0000"]}}, headers=ADMIN),
        422,
        "validation_error",
    )
    assert error["details"] == [{"loc": "payload.k.1", "msg": "must not contain U+0000"}]
    assert count(queue) == 0


def test_any_content_type_is_read_as_json(client: FlaskClient, queue: Queue) -> None:
    # curl -d sends application/x-www-form-urlencoded; the body is JSON all the same.
    response = client.post(
        "/api/jobs", data=b'{"type": "noop"}', headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert response.status_code == 201
    assert count(queue) == 1


def test_body_over_the_limit_without_content_length_is_413(client: FlaskClient, queue: Queue) -> None:
    import io

    body = greet(payload={"name": "a" * 300_000})
    response = client.post(
        "/api/jobs",
        input_stream=io.BytesIO(body),
        headers=ADMIN,
        environ_overrides={"wsgi.input_terminated": True},
    )
    error_of(response, 413, "payload_too_large")
    assert count(queue) == 0


# -- batches ---------------------------------------------------------------------------------------

BAD_BATCHES: list[tuple[str, Any, str, str]] = [
    ("empty", {"jobs": []}, "validation_error", "jobs"),
    ("not-a-list", {"jobs": {"type": "noop"}}, "validation_error", "jobs"),
    ("missing", {}, "validation_error", "jobs"),
    ("extra-field", {"jobs": [{"type": "noop"}], "x": 1}, "validation_error", "x"),
    (
        "one-bad-option",
        {"jobs": [{"type": "noop"}, {"type": "noop", "priority": "1"}]},
        "validation_error",
        "jobs.1.priority",
    ),
    ("one-unknown-type", {"jobs": [{"type": "noop"}, {"type": "nope"}]}, "unknown_job_type", "jobs.1.type"),
    (
        "one-bad-payload",
        {"jobs": [{"type": "noop"}, {"type": "test.greet", "payload": {}}]},
        "validation_error",
        "jobs.1.payload.name",
    ),
    (
        "one-too-deep",
        {"jobs": [{"type": "noop"}, {"type": "noop", "payload": nested(33)}]},
        "validation_error",
        "jobs.1.payload.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a",
    ),
    (
        "same-key-twice",
        {"jobs": [{"type": "noop", "idempotencyKey": "k"}, {"type": "noop", "idempotencyKey": "k"}]},
        "validation_error",
        "jobs.1.idempotencyKey",
    ),
    ("over-1000", {"jobs": [{"type": "noop"}] * 1001}, "validation_error", "jobs"),
]


@pytest.mark.parametrize(
    ("body", "code", "loc"), [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES]
)
def test_bad_batch_writes_nothing(client: FlaskClient, queue: Queue, body: Any, code: str, loc: str) -> None:
    error = error_of(client.post("/api/jobs/batch", json=body, headers=ADMIN), 422, code)
    assert error["details"][0]["loc"] == loc, error
    assert count(queue) == 0


def test_batch_of_1000_is_accepted(client: FlaskClient, queue: Queue) -> None:
    response = client.post("/api/jobs/batch", json={"jobs": [{"type": "noop"}] * 1000}, headers=ADMIN)
    assert response.status_code == 201 and len(response.get_json()["jobs"]) == 1000
    assert count(queue) == 1000


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_enqueues_with_one_key_make_one_job(app: Flask, queue: Queue) -> None:
    start = threading.Barrier(20)
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            client = app.test_client()  # one client per thread
            start.wait(timeout=30)
            response = client.post(
                "/api/jobs", json={"type": "noop", "idempotencyKey": "same", "priority": n}, headers=ADMIN
            )
            with lock:
                results.append((response.status_code, response.get_json()["id"]))
        except BaseException as exc:  # surfaced below, not lost in the thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201]
    assert len({job_id for _, job_id in results}) == 1
    assert count(queue) == 1
    assert count(queue, "idempotency_key = 'same'") == 1
