"""The app under gunicorn on a free loopback port, and a small keep-alive HTTP client for it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
API_KEY = "benchkey"


def api_importable() -> str | None:
    """None when `api.index` imports in a fresh interpreter (the app is finished), else why not."""
    proc = subprocess.run(
        [sys.executable, "-c", "import api.index; api.index.app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def app_env(dsn: str, **extra: str) -> dict[str, str]:
    """The environment a deployed app gets: its database and one admin key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "DATABASE_URL", "CRON_"))}
    env.update(DATABASE_URL=dsn, JOBS_API_KEYS=API_KEY, PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    log: Path

    def client(self, timeout: float = 300.0) -> Client:
        return Client(self.host, self.port, timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def gunicorn(
    dsn: str,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    ready_s: float = 60.0,
    port: int | None = None,
) -> Iterator[Server]:
    """`gunicorn api.index:app <args>` on a free port (or ``port``), ready (health answers 200),
    always stopped after."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        log = Path(tmp) / "gunicorn.log"
        cmd = [sys.executable, "-m", "gunicorn", "api.index:app", "-b", f"127.0.0.1:{port}", *args]
        with log.open("wb") as out:
            # Own session: if the master does not stop on SIGTERM, its whole group is killed.
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=dict(env or app_env(dsn)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server("127.0.0.1", port, log)
        try:
            _wait_ready(proc, server, ready_s)
            _wait_idle(proc.pid)
            yield server
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = server.client(timeout=5).request("GET", "/api/health")
            if status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not ready after {timeout:.0f} s:\n{server.log_tail()}")


def _group_cpu_ticks(pgid: int) -> int:
    """CPU time (clock ticks) used so far by the live processes of process group `pgid`."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:  # fields[0] is /proc's field 3 (state): pgrp is field 5
                total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _wait_idle(pgid: int, timeout: float = 30.0) -> None:
    """Health answers as soon as ONE worker is up; wait until the others finished booting
    (the group uses < 10% of a core for 0.5 s) so their imports don't eat a measurement's CPU."""
    deadline, calm = time.monotonic() + timeout, 0
    last = _group_cpu_ticks(pgid)
    while time.monotonic() < deadline and calm < 2:
        time.sleep(0.25)
        now = _group_cpu_ticks(pgid)
        calm = calm + 1 if now - last <= os.sysconf("SC_CLK_TCK") * 0.025 else 0
        last = now


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    # Workers of a master killed the hard way would linger: kill the group we created.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class Client:
    """One keep-alive connection (http.client); reconnects when the server closed it."""

    def __init__(self, host: str, port: int, timeout: float = 300.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.headers = {"x-api-key": API_KEY, "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A keep-alive connection the server closed while idle: one fresh retry.
                self.conn.close()
                if attempt == 2:
                    raise
        ctype = resp.getheader("Content-Type", "")
        return resp.status, json.loads(raw) if raw and "json" in ctype else raw

    def close(self) -> None:
        self.conn.close()
