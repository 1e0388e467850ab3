"""JOBS_MAX_BODY_BYTES holds for a chunked body too (it has no Content-Length to check up front):
413 from a real server (werkzeug, and gunicorn as deployed) and from the Flask test client, while
a chunked body within the limit, however finely chunked, is read whole."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.index import create_app
from tests.e2e.appserver import ADMIN_KEY, free_port, serve_app, settings_for, sqlite_copy, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4096
HEADERS = {"x-api-key": ADMIN_KEY, "Content-Type": "application/json"}


def body(size: int) -> bytes:
    """An enqueue body of about ``size`` bytes."""
    return json.dumps({"type": "noop", "payload": {"x": "a" * max(0, size - 40)}}).encode()


def post_chunked(base: str, data: bytes, chunk: int) -> tuple[int, Any]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        pieces = (data[i : i + chunk] for i in range(0, len(data), chunk))
        conn.request("POST", "/api/jobs", body=pieces, headers=HEADERS, encode_chunked=True)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def check_server(base: str) -> None:
    for chunk in (100, 1000, 100_000):
        status, answer = post_chunked(base, body(3 * LIMIT), chunk)
        assert (status, answer["error"]["code"]) == (413, "payload_too_large"), chunk
        status, answer = post_chunked(base, body(LIMIT - 100), chunk)
        assert status == 201 and answer["type"] == "noop", (chunk, answer)
    # A first chunk that is a whole JSON object, and the limit's worth of blanks after it.
    status, answer = post_chunked(base, body(100) + b" " * (3 * LIMIT), 100)
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")


def test_werkzeug_server(sqlite_template: Path, tmp_path: Path) -> None:
    settings = settings_for(sqlite_copy(sqlite_template, tmp_path), jobs_max_body_bytes=LIMIT)
    with serve_app(settings) as base:
        check_server(base)


@pytest.fixture
def gunicorn(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "JOB_", "CRON_"))}
    env.update(
        DATABASE_URL=sqlite_copy(sqlite_template, tmp_path),
        JOBS_API_KEYS=ADMIN_KEY,
        JOBS_MAX_BODY_BYTES=str(LIMIT),
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "api.index:app", "-w", "1", "-b", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/health", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(20)


@pytest.mark.slow
def test_gunicorn(gunicorn: str) -> None:
    check_server(gunicorn)


def test_flask_test_client(sqlite_template: Path, tmp_path: Path) -> None:
    app = create_app(settings_for(sqlite_copy(sqlite_template, tmp_path), jobs_max_body_bytes=LIMIT))
    client = app.test_client()
    # A server that dechunks marks the stream as terminated (WSGI's wsgi.input_terminated).
    chunked = {"Transfer-Encoding": "chunked", **HEADERS}
    environ = {"wsgi.input_terminated": True}
    for size, status in ((3 * LIMIT, 413), (LIMIT - 100, 201)):
        stream = io.BufferedReader(io.BytesIO(body(size)), buffer_size=100)  # type: ignore[arg-type]
        answer = client.post("/api/jobs", input_stream=stream, headers=chunked, environ_overrides=environ)
        assert answer.status_code == status, answer.get_data(as_text=True)
