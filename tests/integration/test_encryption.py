"""Encryption at rest of sensitive payload fields (lib/crypto.py), on both databases: the row and the
API hold only {"$enc": token}; the handler gets the plain value; keys rotate (new key first, old
ones still decrypt, `python -m lib rotate-keys` re-encrypts, then the old key can go); a sensitive
type without JOBS_ENCRYPTION_KEYS is refused and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import Queue, Registry
from lib.cli import main
from lib.config import Settings, get_settings
from lib.errors import ConfigError
from lib.schema import jobs, schedules
from tests.jobtypes import SENSITIVE_SEEN, Card
from tests.support.api import ADMIN, api_settings, error_of
from tests.support.db import count, make_queue

CARD = "4111-1111-1111-1111"
TOKEN = "tok_live_5ecret"
KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
ROOT = Path(__file__).resolve().parents[2]


def raw_payloads(queue: Queue, table: sa.Table = jobs) -> list[str]:
    """The payload column as the database holds it, as text."""
    with queue.engine.connect() as conn:
        return [str(text) for text in conn.execute(sa.select(sa.cast(table.c.payload, sa.Text))).scalars()]


def raw_tokens(queue: Queue, table: sa.Table = jobs) -> list[str]:
    return [
        value["$enc"]
        for text in raw_payloads(queue, table)
        for value in json.loads(text).values()
        if isinstance(value, dict) and "$enc" in value
    ]


def opens_with(key: str, token: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(token.encode())
        return True
    except InvalidToken:
        return False


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app(api_settings(db_url, jobs_encryption_keys=KEY_A))
    yield app
    app_state(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_stored_and_shown_encrypted_handled_in_plain_text(client: FlaskClient) -> None:
    queue = app_state(client.application).queue
    body = {"type": "test.sensitive", "payload": {"card": CARD, "token": TOKEN, "note": "visible"}}
    made = client.post("/api/jobs", json=body, headers=ADMIN)
    assert made.status_code == 201
    shown = made.get_json()["payload"]
    assert set(shown) == {"card", "token", "note"} and shown["note"] == "visible"
    assert set(shown["card"]) == {"$enc"} and set(shown["token"]) == {"$enc"}
    batch = client.post("/api/jobs/batch", json={"jobs": [body, {"type": "noop"}]}, headers=ADMIN)
    assert batch.status_code == 201

    [raw, other, _] = sorted(raw_payloads(queue), key=len, reverse=True)
    assert CARD not in raw + other and TOKEN not in raw + other and "visible" in raw
    assert len(raw_tokens(queue)) == 4 and all(opens_with(KEY_A, t) for t in raw_tokens(queue))
    # Every way the API (and so the dashboard) shows a job: the marker only.
    job_id = made.get_json()["id"]
    views = [
        client.get(f"/api/jobs/{job_id}", headers=ADMIN),
        client.get("/api/jobs", headers=ADMIN),
        client.get("/api/jobs/status", headers=ADMIN),
        client.post(f"/api/jobs/{job_id}/cancel", headers=ADMIN),
        client.post(f"/api/jobs/{job_id}/retry", headers=ADMIN),
    ]
    for view in views:
        text = view.get_data(as_text=True)
        assert view.status_code == 200 and "$enc" in text and CARD not in text and TOKEN not in text

    SENSITIVE_SEEN.clear()
    summary = client.post("/api/jobs/process", headers=ADMIN).get_json()
    assert (summary["processed"], summary["succeeded"]) == (3, 3)
    assert SENSITIVE_SEEN == [{"card": CARD, "token": TOKEN, "note": "visible"}] * 2
    assert count(queue, "status = 'completed'") == 3
    assert all(CARD not in text and TOKEN not in text for text in raw_payloads(queue))


def test_rotation_new_key_first_then_rotate_then_drop_the_old_key(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = make_queue(db_url, jobs_encryption_keys=KEY_A)
    old_ids = [old.enqueue("test.sensitive", {"card": CARD, "token": TOKEN}).id for _ in range(3)]
    old.schedules.put_schedule(
        "charge", {"cron": "* * * * *", "type": "test.sensitive", "payload": {"card": CARD}}
    )
    assert CARD not in "".join(raw_payloads(old, schedules))
    old.engine.dispose()

    # 1. The new key goes first: it encrypts new jobs, and the old key still decrypts.
    both = make_queue(db_url, jobs_encryption_keys=f"{KEY_B},{KEY_A}")
    new_id = both.enqueue("test.sensitive", {"card": CARD}).id
    SENSITIVE_SEEN.clear()
    assert both.drain(max_jobs=1).succeeded == 1  # an old job, opened with the old key
    assert SENSITIVE_SEEN == [{"card": CARD, "token": TOKEN, "note": ""}]

    # 2. Re-encrypt what is stored with the new key, in batches (here of 2).
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("JOBS_HANDLER_MODULES", "tests.jobtypes")
    monkeypatch.setenv("JOBS_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    for expected in ({"jobs": 3, "schedules": 1}, {"jobs": 0, "schedules": 0}):
        get_settings.cache_clear()
        assert main(["rotate-keys", "--batch-size", "2"]) == 0
        assert json.loads(capsys.readouterr().out) == expected
    get_settings.cache_clear()
    tokens = raw_tokens(both) + raw_tokens(both, schedules)
    assert len(tokens) == 5 * 2  # card and token (its default null too) of 4 jobs and the schedule
    assert all(opens_with(KEY_B, t) and not opens_with(KEY_A, t) for t in tokens)
    assert {job.id for job in both.list(limit=10).jobs} == {*old_ids, new_id}
    both.engine.dispose()

    # 3. Without the old key, every job and the schedule's next job still open.
    new = make_queue(db_url, jobs_encryption_keys=KEY_B)
    with new.engine.begin() as conn:
        [slot] = new.schedules.enqueue_due(conn, now=datetime.now(UTC) + timedelta(minutes=2))
        # Due now rather than at its slot a minute ahead.
        conn.execute(sa.update(jobs).where(jobs.c.type == "test.sensitive").values(run_at=datetime.now(UTC)))
    assert opens_with(KEY_B, slot.job.payload["card"]["$enc"])
    SENSITIVE_SEEN.clear()
    summary = new.drain(max_jobs=10)
    assert (summary.processed, summary.succeeded) == (4, 4)
    assert [seen["card"] for seen in SENSITIVE_SEEN] == [CARD] * 4
    assert new.get(slot.job.id).status == "completed"
    assert count(new, "status = 'completed'") == 5
    new.engine.dispose()


def test_a_key_that_no_longer_matches_fails_the_attempt_without_revealing_anything(db_url: str) -> None:
    old = make_queue(db_url, jobs_encryption_keys=KEY_A)
    job = old.enqueue("test.sensitive", {"card": CARD}, max_attempts=1)
    old.engine.dispose()
    other = make_queue(db_url, jobs_encryption_keys=KEY_B)
    assert other.drain().failed == 1
    dead = other.get(job.id)
    assert dead.status == "failed"
    assert dead.last_error == (
        "ConfigError: payload field 'card' cannot be decrypted: no key in JOBS_ENCRYPTION_KEYS matches"
    )
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        other.rotation.rotate_keys()
    other.engine.dispose()


def test_without_keys_a_sensitive_type_is_refused_and_nothing_is_written(db_url: str) -> None:
    app = create_app(api_settings(db_url))
    client = app.test_client()
    queue = app_state(app).queue
    try:
        body: dict[str, Any] = {"type": "test.sensitive", "payload": {"card": CARD}}
        error = error_of(client.post("/api/jobs", json=body, headers=ADMIN), 503, "not_configured")
        assert "JOBS_ENCRYPTION_KEYS" in error["message"] and CARD not in error["message"]
        batch = {"jobs": [{"type": "noop"}, body]}
        error_of(client.post("/api/jobs/batch", json=batch, headers=ADMIN), 503, "not_configured")
        schedule = {"cron": "* * * * *", **body}
        error_of(client.put("/api/schedules/charge", json=schedule, headers=ADMIN), 503, "not_configured")
        with pytest.raises(ConfigError):
            queue.enqueue("test.sensitive", {"card": CARD})
        # Other types are not affected.
        assert client.post("/api/jobs", json={"type": "noop"}, headers=ADMIN).status_code == 201
        assert count(queue) == 1 and count(queue, "type = 'test.sensitive'") == 0
        assert client.get("/api/schedules", headers=ADMIN).get_json() == {"schedules": []}
    finally:
        app_state(app).dispose()


def test_settings_and_declarations_are_checked() -> None:
    with pytest.raises(pydantic.ValidationError, match="Fernet keys"):
        Settings(jobs_encryption_keys=f"{KEY_A},not-a-key")
    assert Settings(jobs_encryption_keys=f" {KEY_B} , {KEY_A} ").encryption_keys == (KEY_B, KEY_A)
    with pytest.raises(ValueError, match="not fields of its payload"):
        Registry().job("x", payload=Card, sensitive=("cvv",))(lambda payload: None)


def test_cryptography_is_imported_only_when_a_sensitive_field_is_handled(tmp_path: Path) -> None:
    """Cold start: an app whose jobs have no sensitive fields never loads cryptography, even with
    a sensitive type registered and keys set."""
    probe = (
        "import sys\n"
        "import api.index\n"
        "from lib import Queue\n"
        f"q = Queue.from_url('sqlite:///{tmp_path}/c.db', jobs_handler_modules='tests.jobtypes',"
        f" jobs_encryption_keys='{KEY_A}')\n"
        "q.migrate(); q.enqueue('noop'); q.drain()\n"
        "print('before', 'cryptography' in sys.modules)\n"
        "q.enqueue('test.sensitive', {'card': 'x'})\n"
        "print('after', 'cryptography' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["before", "False", "after", "True"]
