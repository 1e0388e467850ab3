"""Webhook signatures (sign / verify_signature) and the headers an ``http`` job sends."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

import pytest

from lib import JobContext
from lib.handlers.http import USER_AGENT, encode_body, request_headers, sign, verify_signature

SECRET = "whsec_test"


def make_ctx(attempt: int = 1) -> JobContext:
    job_id = uuid.uuid4()
    return JobContext(
        job_id=str(job_id),
        type="http",
        attempt=attempt,
        max_attempts=5,
        tenant_id=None,
        correlation_id="corr",
        deadline=time.monotonic() + 60,
        _report=lambda _i, _p, _s: None,
        _uuid=job_id,
    )


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", body) == f"v1={expected}"


def test_verify_accepts_a_fresh_signature() -> None:
    now = 1_700_000_000
    body = b'{"event":"paid","amount":10}'
    header = sign(SECRET, str(now), body)
    assert verify_signature(SECRET, str(now), body, header, now=now + 299)
    assert verify_signature(SECRET, now, body.decode(), header, now=now - 299)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "clock"),
    [
        ("other-secret", "1700000000", b'{"a":1}', 1_700_000_000),  # wrong secret
        (SECRET, "1700000000", b'{"a":2}', 1_700_000_000),  # tampered body
        (SECRET, "1700000001", b'{"a":1}', 1_700_000_000),  # tampered timestamp
        (SECRET, "1700000000", b'{"a":1}', 1_700_000_301),  # too old: a replay
        (SECRET, "1700000000", b'{"a":1}', 1_699_999_699),  # from the future
        (SECRET, "not-a-number", b'{"a":1}', 1_700_000_000),
    ],
)
def test_verify_refuses(secret: str, timestamp: str, body: bytes, clock: int) -> None:
    header = sign(SECRET, "1700000000", b'{"a":1}')
    assert not verify_signature(secret, timestamp, body, header, now=clock)


def test_verify_refuses_garbage_headers() -> None:
    for header in ("", "v1=", "v0=abc", "v1=zz", "v1=ü", sign(SECRET, "1", b"x").upper()):
        assert not verify_signature(SECRET, "1", b"x", header, tolerance=None)


def test_verify_accepts_any_of_several_values_and_no_tolerance() -> None:
    header = f"v1={'0' * 64}, {sign(SECRET, '5', b'')}"
    assert verify_signature(SECRET, "5", b"", header, tolerance=None)
    assert not verify_signature(SECRET, "5", b"", header)  # 1970 is far outside 300 s


def test_headers_without_body_or_secret() -> None:
    ctx = make_ctx(attempt=3)
    headers = request_headers({"X-Trace": "t1"}, ctx, None, "", "1700000000")
    assert headers == {
        "User-Agent": USER_AGENT,
        "X-Trace": "t1",
        "Sluice-Job-Id": ctx.job_id,
        "Sluice-Attempt": "3",
        "Sluice-Timestamp": "1700000000",
    }


def test_headers_with_body_and_secret_sign_the_exact_bytes() -> None:
    ctx = make_ctx()
    body = encode_body({"b": [1, 2], "name": "wörld"})
    assert body == b'{"b":[1,2],"name":"w\\u00f6rld"}'
    headers = request_headers({}, ctx, body, SECRET, "1700000000")
    assert headers["Content-Type"] == "application/json"
    assert headers["Sluice-Signature"] == sign(SECRET, "1700000000", body)
    assert verify_signature(SECRET, "1700000000", body, headers["Sluice-Signature"], tolerance=None)


def test_no_body_signs_the_empty_string() -> None:
    headers = request_headers({}, make_ctx(), None, SECRET, "42")
    assert headers["Sluice-Signature"] == sign(SECRET, "42", b"")
    assert encode_body(None) is None


def test_payload_headers_override_defaults_case_insensitively() -> None:
    headers = request_headers(
        {"user-agent": "mine/1", "content-type": "application/cloudevents+json"},
        make_ctx(),
        b"{}",
        "",
        "1",
    )
    assert headers["user-agent"] == "mine/1"
    assert headers["content-type"] == "application/cloudevents+json"
    assert "User-Agent" not in headers and "Content-Type" not in headers
