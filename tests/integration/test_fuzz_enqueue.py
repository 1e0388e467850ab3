"""Fuzzing the enqueue routes (hypothesis, SQLite, through the Flask test client): valid-ish bodies
with random mutations (wrong types, unknown fields, huge and negative numbers, U+0000, lone
surrogates, odd Unicode, deep nesting) and arbitrary JSON. Never a 500; every answer is a job (or
the batch's jobs) or the documented error object; a refusal writes nothing, a success writes
exactly the jobs it answers with."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api._http import STATUS_BY_CODE
from api._state import app_state
from api.index import create_app
from lib.schema import jobs
from tests.support.api import ADMIN, JOB_KEYS, api_settings

# Deterministic and database-less: the same examples on every run, no .hypothesis directory.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
OK_STATUSES = {200, 201}
REFUSALS = {400, 413, 422}

# -- JSON values -----------------------------------------------------------------------------------

# Any code point, lone surrogates (Cs) and U+0000 included.
odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    [
        "",
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfff",
        "\U0001f600",
        "\u202e",
        "\ufeff",
        "ｔｙｐｅ",
        "\n\t",
        " " * 300,
    ]
)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(
        [0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**20, 1000, 1001, -1001, 900, 901, 315_360_001]
    )
    | st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.none() | st.booleans() | numbers | odd_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def deeply_nested(draw: st.DrawFn) -> Any:
    """Objects and arrays 28 to 45 levels deep (the payload limit is 32)."""
    value: Any = draw(scalars)
    for _ in range(draw(st.integers(28, 45))):
        value = {draw(st.sampled_from(["a", "b"])): value} if draw(st.booleans()) else [value]
    return value


anything = json_values | deeply_nested()

# -- enqueue bodies ---------------------------------------------------------------------------------

# Storable text: any code point but U+0000 and lone surrogates (emoji, RTL marks, BOMs included).
fine_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
PAYLOADS = {
    "noop": st.just({}),
    "test.greet": st.fixed_dictionaries({"name": fine_text}, optional={"times": st.integers(0, 3)}),
    "test.sensitive": st.fixed_dictionaries({"card": fine_text}, optional={"token": fine_text | st.none()}),
    "http": st.fixed_dictionaries(
        {"url": st.sampled_from(["https://example.com/hook", "http://hooks.example.org:8080/a?b=c"])},
        optional={"method": st.sampled_from(["GET", "POST", "PUT"]), "body": json_values},
    ),
    "test.fail": st.dictionaries(fine_text, json_values, max_size=3),
}
# Valid values of every option; mutations below make them invalid.
OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "runAt": st.sampled_from(
        ["2030-01-01T00:00:00Z", "2001-02-03T04:05:06.789+05:30", "9999-12-31T00:00:00Z"]
    ),
    "delaySeconds": st.integers(0, 315_360_000),
    "priority": st.integers(-1000, 1000),
    "maxAttempts": st.integers(1, 100),
    "timeoutSeconds": st.integers(1, 900),
    "backoff": st.fixed_dictionaries(
        {},
        optional={
            "strategy": st.sampled_from(["exponential", "fixed", "linear"]),
            "delaySeconds": st.integers(0, 86_400),
            "maxDelaySeconds": st.integers(0, 86_400),
        },
    ),
    "idempotencyKey": fine_text,
    "tenantId": fine_text,
    "correlationId": fine_text,
}
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["nope", "", "NOOP", "noop ", "x" * 256]) | odd_text,
    "runAt": st.sampled_from(["2030-01-01T00:00:00", "1969-12-31T23:59:59Z", "10000-01-01T00:00:00Z", "now"]),
    "delaySeconds": st.sampled_from([-1, 315_360_001, 2**63, 1.5, "5", True]),
    "priority": st.sampled_from([-1001, 1001, 10**20, -(2**63) - 1, 5.0, "5", False]),
    "maxAttempts": st.sampled_from([0, 101, -1, 2**31]),
    "timeoutSeconds": st.sampled_from([0, 901, 2**64]),
    "backoff": st.sampled_from([{"strategy": "random"}, {"delaySeconds": -1}, {"delay": 1}, [], "fixed"]),
    "idempotencyKey": st.sampled_from(["", "x" * 256, "a\x00b", "\ud800"]),
    "tenantId": st.sampled_from(["", "t" * 256, 5]),
    "correlationId": st.sampled_from(["", None, {}, "\udfff"]),
    "payload": st.sampled_from([[], "x", None, 1]) | st.builds(lambda v: {"deep": v}, deeply_nested()),
}
FIELDS = ["type", "payload", *OPTIONS]


# How many mutations a body gets: a third stay valid.
SOME_MUTATIONS = st.sampled_from([0, 0, 1, 2, 3, 3])
RARE_MUTATIONS = st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1])


@st.composite
def enqueue_bodies(draw: st.DrawFn, mutations: st.SearchStrategy[int] = SOME_MUTATIONS) -> Any:
    """A valid body (a type, its payload, some options), then a few mutations."""
    kind = draw(st.sampled_from(sorted(PAYLOADS)))
    body: dict[str, Any] = {"type": kind, "payload": draw(PAYLOADS[kind])}
    for name in draw(st.lists(st.sampled_from(list(OPTIONS)), max_size=4, unique=True)):
        body[name] = draw(OPTIONS[name])
    if "runAt" in body and "delaySeconds" in body:
        del body["delaySeconds"]
    for _ in range(draw(mutations)):
        mutation = draw(st.sampled_from(["bad", "any", "delete", "unknown", "payload-field"]))
        if mutation == "bad":
            name = draw(st.sampled_from(sorted(BAD_VALUES)))
            body[name] = draw(BAD_VALUES[name])
        elif mutation == "any":
            body[draw(st.sampled_from(FIELDS))] = draw(anything)
        elif mutation == "delete" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif mutation == "unknown":
            body[draw(odd_text | st.sampled_from(["max_attempts", "Type", "status", "id"]))] = draw(
                json_values
            )
        elif mutation == "payload-field" and isinstance(body.get("payload"), dict):
            body["payload"][draw(odd_text)] = draw(anything)
    return body


batch_bodies = st.fixed_dictionaries(
    {
        "jobs": st.lists(enqueue_bodies(RARE_MUTATIONS), min_size=1, max_size=6)
        | st.lists(anything)
        | anything
    },
    optional={"extra": json_values},
)


# -- the app ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    path = tmp_path_factory.mktemp("fuzz") / "sluice.db"
    shutil.copy(sqlite_template, path)
    settings = api_settings(f"sqlite:///{path}", jobs_encryption_keys=Fernet.generate_key().decode())
    app = create_app(settings)
    yield app
    app_state(app).dispose()


def rows(app: Flask) -> list[str]:
    with app_state(app).queue.engine.connect() as conn:
        return [str(i) for i in conn.execute(sa.select(jobs.c.id)).scalars()]


def empty(app: Flask) -> None:
    with app_state(app).queue.engine.begin() as conn:
        conn.execute(sa.delete(jobs))


def post(client: FlaskClient, path: str, body: Any) -> Any:
    """JSON text as a client would send it: lone surrogates escaped (\\ud800), the rest UTF-8."""
    text = json.dumps(body, ensure_ascii=False)
    data = json.dumps(body).encode() if _has_surrogates(text) else text.encode()
    return client.post(path, data=data, headers={**ADMIN, "Content-Type": "application/json"})


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def check_answer(app: Flask, response: Any, batch: bool) -> None:
    """The invariants of any answer to an enqueue (the table was empty before the call)."""
    status = response.status_code
    event(f"HTTP {status}")
    assert status in OK_STATUSES | REFUSALS, (status, response.get_data(as_text=True)[:500])
    body = response.get_json()
    stored = rows(app)
    if status in REFUSALS:
        assert list(body) == ["error"]
        error = body["error"]
        assert set(error) <= {"code", "message", "details"} and {"code", "message"} <= set(error)
        assert STATUS_BY_CODE[error["code"]] == status
        assert isinstance(error["message"], str) and error["message"]
        if "details" in error:
            assert all(set(item) == {"loc", "msg"} for item in error["details"]), error
        assert stored == [], "a refused enqueue wrote rows"
        return
    jobs = body["jobs"] if batch else [body]
    assert list(body) == (["jobs"] if batch else JOB_KEYS)
    for job in jobs:
        assert list(job) == JOB_KEYS
        assert job["status"] == "pending" and job["attempts"] == 0
        check_contract(job)
    assert sorted(stored) == sorted({job["id"] for job in jobs})


def check_contract(job: dict[str, Any]) -> None:
    """What API.md promises about any job it accepted, whatever the body looked like."""
    assert -1000 <= job["priority"] <= 1000
    assert 1 <= job["maxAttempts"] <= 100 and 1 <= job["timeoutSeconds"] <= 900
    for name in ("type", "tenantId", "correlationId", "idempotencyKey"):
        assert job[name] is None or 1 <= len(job[name]) <= 255, name
    assert depth(job["payload"]) <= 32
    assert not UNSTORABLE.search(json.dumps(job, ensure_ascii=False)), "U+0000 or a lone surrogate"
    if job["type"] == "test.sensitive":
        assert set(job["payload"]["card"]) == {"$enc"}, "a sensitive field left in plain text"


UNSTORABLE = re.compile("\\\\u0000|[\ud800-\udfff]")


def depth(value: Any) -> int:
    """{} and [] count one level, as API.md counts them."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@FUZZ
@given(body=enqueue_bodies())
def test_fuzzed_enqueue(fuzz_app: Flask, body: dict[str, Any]) -> None:
    empty(fuzz_app)
    check_answer(fuzz_app, post(fuzz_app.test_client(), "/api/jobs", body), batch=False)


@FUZZ
@given(body=batch_bodies)
def test_fuzzed_batch(fuzz_app: Flask, body: dict[str, Any]) -> None:
    empty(fuzz_app)
    check_answer(fuzz_app, post(fuzz_app.test_client(), "/api/jobs/batch", body), batch=True)


@st.composite
def deep_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Objects 28 to 40 levels deep in all, with odd text in keys and values."""
    value: Any = draw(scalars)
    for _ in range(draw(st.integers(27, 39))):
        value = {draw(odd_text): value} if draw(st.booleans()) else [value, draw(scalars)]
    return {draw(odd_text): value}


@FUZZ
@given(type_=st.sampled_from(["noop", "test.fail"]), payload=deep_payloads() | json_values)
def test_fuzzed_payloads(fuzz_app: Flask, type_: str, payload: Any) -> None:
    """Types that take any object: only the depth, U+0000 and surrogate rules stand in the way."""
    empty(fuzz_app)
    body = {"type": type_, "payload": payload}
    check_answer(fuzz_app, post(fuzz_app.test_client(), "/api/jobs", body), batch=False)


@FUZZ
@given(body=anything, path=st.sampled_from(["/api/jobs", "/api/jobs/batch"]))
def test_arbitrary_json(fuzz_app: Flask, body: Any, path: str) -> None:
    empty(fuzz_app)
    check_answer(fuzz_app, post(fuzz_app.test_client(), path, body), batch=path.endswith("batch"))
