"""Real servers for end-to-end tests: the Flask app on a free loopback port in a thread, free
ports for subprocess servers, and a migrated SQLite file copied from the session's template."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from api.index import create_app
from lib.config import Settings

ADMIN_KEY = "admin-key-for-tests"
TENANT_KEY = "acme-key-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sqlite_copy(template: Path, directory: Path) -> str:
    """A fresh migrated SQLite database (a copy of conftest's template)."""
    path = directory / "sluice.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "jobs_api_keys": ADMIN_KEY,
        "jobs_tenant_keys": f"acme:{TENANT_KEY}",
        "jobs_handler_modules": "tests.jobtypes",
        "cron_secret": "",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def serve_app(settings: Settings, *, public_url: bool = False) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> in a thread; yields its base URL. ``public_url``: that URL
    is the app's JOBS_PUBLIC_URL (where fan-out drains call it)."""
    server = make_server("127.0.0.1", 0, None, threaded=True)
    if public_url:
        base = f"http://127.0.0.1:{server.server_port}"
        settings = Settings(**{**settings.model_dump(), "jobs_public_url": base})
    app = create_app(settings)
    server.app = app
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.extensions["sluice"].dispose()


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    """Until ``url`` answers at all (any status), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# The admin key of the gunicorn servers the e2e tests start.
KEY = "gunicorn-admin-key"


def call(base: str, method: str, path: str, body: Any = None, key: str | None = KEY) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-api-key"] = key
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        with exc:
            raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def clean_env(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without Sluice's settings, plus an admin key, the test job types
    and ``extra``: what a server or CLI under test reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "JOB_", "CRON_", "VERCEL"))}
    env.update(DATABASE_URL=database_url, JOBS_API_KEYS=KEY, JOBS_HANDLER_MODULES="tests.jobtypes", **extra)
    return env


@contextmanager
def gunicorn_server(env: dict[str, str], port: int, *options: str) -> Iterator[str]:
    """``python -m lib migrate``, then ``gunicorn api.index:app`` on 127.0.0.1:port with ``options``;
    yields its base URL and checks that it stops cleanly on SIGTERM."""
    root = Path(__file__).resolve().parents[2]
    migrate = subprocess.run(
        [sys.executable, "-m", "lib", "migrate"],
        check=False, cwd=root, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "api.index:app", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "--timeout", "60", *options],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/api/health", timeout=30)
        yield base
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
        assert server.returncode == 0, err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
