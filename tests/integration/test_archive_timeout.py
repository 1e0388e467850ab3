"""Cleanup while S3 hangs (an endpoint on loopback that accepts and never answers): the archive
upload gives up within the cleanup's budget, the API answers 503, nothing of the batch is
deleted, and its rows are free again at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from api._state import app_state
from api.index import create_app
from lib import aws
from tests.support.api import api_settings
from tests.support.archive import DAY, make_job
from tests.support.db import count

BUDGET_MS = 1500
ADMIN = {"x-api-key": "k1"}


class Hanging:
    """Accepts connections and reads what comes, never answering, until closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)

    def close(self) -> None:
        self.stop.set()
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def hanging_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hanging]:
    server = Hanging()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    aws.clear_clients()
    yield server
    server.close()
    aws.clear_clients()


def test_cleanup_gives_up_on_a_hanging_s3_within_its_budget(db_url: str, hanging_s3: Hanging) -> None:
    settings = api_settings(db_url, jobs_archive_s3_bucket="archive", jobs_drain_budget_ms=BUDGET_MS)
    app = create_app(settings)
    queue = app_state(app).queue
    try:
        old = {make_job(queue, "completed", 2 * DAY) for _ in range(3)}
        answers: list[object] = []

        def call() -> None:
            answers.append(app.test_client().post("/api/jobs/cleanup", headers=ADMIN))

        started = time.monotonic()
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        # Bounded by the budget (plus a whole second of rounding), not by botocore's 60 s reads
        # and retries: the review measured 183 s against a 25 s budget.
        caller.join(BUDGET_MS / 1000 + 5)
        elapsed = time.monotonic() - started
        assert not caller.is_alive(), f"cleanup still waiting for S3 after {elapsed:.1f} s"
        assert hanging_s3.accepted == 1  # one attempt, no retries
        [answer] = answers
        assert answer.status_code == 503, answer.get_data(as_text=True)  # type: ignore[attr-defined]
        error = answer.get_json()["error"]  # type: ignore[attr-defined]
        assert error["code"] == "unavailable" and "not deleted" in error["message"]
        assert count(queue, "status = 'completed'") == len(old) == 3
        if queue.dialect == "postgresql":
            # The rows are free: nobody holds their locks any more.
            with queue.engine.begin() as conn:
                locked = conn.execute(sa.text("SELECT id FROM sluice_jobs FOR UPDATE NOWAIT")).all()
            assert len(locked) == 3
    finally:
        app_state(app).dispose()
