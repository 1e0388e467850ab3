"""``python -m lib serve`` as a newcomer runs it: no key configured, a fresh SQLite file; a job
enqueued over HTTP completes on its own (the cron emulator's tick), and Ctrl-C/SIGTERM stops it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.appserver import free_port

ROOT = Path(__file__).resolve().parents[2]


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _wait_for_line(lines: queue.Queue[str], prefix: str, seen: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r} in {seen}")


def _serve_env(database: Path, **settings: str) -> dict[str, str]:
    """A newcomer's environment: none of Sluice's settings but ``settings``, a SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "JOB_", "CRON_", "VERCEL"))}
    env.update(DATABASE_URL=f"sqlite:///{database}", PYTHONUNBUFFERED="1", **settings)
    return env


@contextlib.contextmanager
def _serve(
    env: dict[str, str], port: int, tick: int, out: queue.Queue[str], err: queue.Queue[str]
) -> Iterator[subprocess.Popen[str]]:
    """``python -m lib serve`` with its stdout and stderr lines pumped into ``out`` and ``err``
    (the same queue for both is fine); killed afterwards if a test left it running."""
    server = subprocess.Popen(
        [sys.executable, "-m", "lib", "serve", "--port", str(port), "--tick", str(tick)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None and server.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(stream, lines), daemon=True)
        for stream, lines in ((server.stdout, out), (server.stderr, err))
    ]
    for pump in pumps:
        pump.start()
    try:
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pump in pumps:
            pump.join(timeout=5)
        server.stdout.close()
        server.stderr.close()


def _call(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"x-api-key": key, "content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_serve_runs_jobs_without_anyone_calling_process(tmp_path: Path) -> None:
    port = free_port()
    # Kicks off: the emulator's tick is what runs the job here (test_serve_kicks_itself: the kick).
    env = _serve_env(tmp_path / "dev" / "sluice.db", JOBS_KICK="off")
    lines: queue.Queue[str] = queue.Queue()
    errors: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    with _serve(env, port, 1, lines, errors) as server:
        key = _wait_for_line(lines, "API key: ", seen, 30).split(": ", 1)[1].strip()
        assert len(key) >= 32
        _wait_for_line(lines, "Ctrl-C to stop.", seen, 10)
        printed = "".join(seen)
        base = f"http://127.0.0.1:{port}"
        assert f"Sluice dev server: {base}" in printed
        assert f"curl -s -X POST {base}/api/jobs -H 'x-api-key: {key}'" in printed

        status, job = _call("POST", f"{base}/api/jobs", key, {"type": "noop"})
        assert (status, job["status"]) == (201, "pending")
        deadline = time.monotonic() + 15
        while True:
            _, current = _call("GET", f"{base}/api/jobs/{job['id']}", key)
            if current["status"] == "completed":
                break
            assert time.monotonic() < deadline, f"still {current['status']} after 15 s"
            time.sleep(0.2)
        _, overview = _call("GET", f"{base}/api/jobs/status", key)
        assert overview["counts"]["completed"] == 1
        # The emulator's calls are cron drains (Vercel Cron's user agent), not API calls.
        assert overview["lastDrain"]["source"] == "cron"

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        _wait_for_line(lines, "stopped", seen, 5)
    logged = []
    while not errors.empty():
        logged.append(errors.get())
    # The emulator reports the drain that ran the job; its idle ticks stay out of the log.
    assert any(line.startswith("cron: GET /api/jobs/process: processed 1") for line in logged), logged
    assert not any('"processed":0,"succeeded":0' in line for line in logged)


def test_serve_kicks_itself_on_enqueue(tmp_path: Path) -> None:
    """No tick, and vercel.json's cron is minutes away: only the kick runs the job within seconds."""
    port = free_port()
    env = _serve_env(tmp_path / "sluice.db", JOBS_API_KEYS="dev-key")
    errors: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    base = f"http://127.0.0.1:{port}"
    with _serve(env, port, 0, errors, errors) as server:
        line = _wait_for_line(errors, "Kick on enqueue: ", seen, 30)
        assert f"POST {base}/api/jobs/process?maxJobs=1000" in line
        _wait_for_line(errors, "Ctrl-C to stop.", seen, 10)
        status, job = _call("POST", f"{base}/api/jobs", "dev-key", {"type": "noop"})
        assert status == 201
        deadline = time.monotonic() + 10
        while _call("GET", f"{base}/api/jobs/{job['id']}", "dev-key")[1]["status"] != "completed":
            assert time.monotonic() < deadline, "the kick did not run the job"
            time.sleep(0.05)
        # (vercel.json's cron may fire meanwhile too: what counts is the kick's drain that ran it.)
        with contextlib.closing(sqlite3.connect(tmp_path / "sluice.db")) as db:
            kicked = db.execute("SELECT sum(processed) FROM sluice_drains WHERE source = 'kick'").fetchone()
        assert kicked == (1,)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0


def test_serve_names_a_start_up_problem_and_health_says_it(tmp_path: Path) -> None:
    port = free_port()
    env = _serve_env(tmp_path / "sluice.db", JOBS_HANDLER_MODULES="app.jobz")
    output: queue.Queue[str] = queue.Queue()
    errors: queue.Queue[str] = queue.Queue()
    with _serve(env, port, 0, output, errors) as server:
        line = _wait_for_line(errors, "error: ", [], 30)
        assert "JOBS_HANDLER_MODULES" in line and "'app.jobz' does not import" in line
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/health")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        body = json.loads(refused.value.read())
        assert refused.value.code == 503 and body["status"] == "misconfigured"
        assert "JOBS_HANDLER_MODULES" in body["problem"]
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
