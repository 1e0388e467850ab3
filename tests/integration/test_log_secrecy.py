"""Logs never hold secrets or payloads. Everything the `sluice` logger and the root logger emit at
DEBUG (SQLAlchemy's statement and row logs included), and everything written to stdout/stderr by the
app's own log handler, is captured while jobs whose payloads hold a marker run through every path
(success, retry, permanent failure, timeout, an encrypted type, a signed http delivery) and the
API is called with good and bad admin, tenant and cron credentials. None of the keys, secrets or
the marker may appear anywhere in it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib.config import Settings
from lib.logs import configure
from lib.schema import jobs
from tests.support.api import api_settings
from tests.support.db import count
from tests.support.webhook import Answer, Hook, serve

MARKER = "PAYL0AD-MARK3R-e2e2"
ADMIN_KEY, ADMIN_KEY_2 = "adm1n-k3y-7f3a9c", "adm1n-k3y-2nd-b81e"
TENANT_KEY = "t3nant-k3y-c0ffee"
CRON_SECRET = "cr0n-s3cret-9d8e"
SIGNING_SECRET = "s1gning-s3cret-4a4a"
WRONG_KEY = "wr0ng-k3y-guess-77"
ENCRYPTION_KEY = Fernet.generate_key().decode()
SECRETS = {
    "payload marker": MARKER,
    "admin key": ADMIN_KEY,
    "second admin key": ADMIN_KEY_2,
    "tenant key": TENANT_KEY,
    "cron secret": CRON_SECRET,
    "signing secret": SIGNING_SECRET,
    "a wrong key someone tried": WRONG_KEY,
    "encryption key": ENCRYPTION_KEY,
}
ADMIN = {"x-api-key": ADMIN_KEY}
ADMIN_BEARER = {"Authorization": f"Bearer {ADMIN_KEY_2}"}
TENANT = {"Authorization": f"Bearer {TENANT_KEY}"}
CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
NO_DELAY = {"strategy": "fixed", "delaySeconds": 0}


@pytest.fixture
def hook() -> Iterator[Hook]:
    yield from serve(Hook())


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """DEBUG everywhere (SQL statements included), the app's own stderr handler installed (as
    api/index.py does for a deployed app), and caplog's handler on the `sluice` logger too (it
    stops propagating)."""
    sluice = logging.getLogger("sluice")
    saved = (list(sluice.handlers), sluice.propagate, sluice.level)
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy keeps its own loggers at WARNING; a host debugging SQL turns statements (INFO)
    # and result rows (DEBUG) on.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    configure("DEBUG")
    sluice.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        sluice.handlers[:], sluice.propagate = saved[0], saved[1]
        sluice.setLevel(saved[2])


def post(client: FlaskClient, path: str, body: Any, headers: dict[str, str], status: int) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_no_secret_or_payload_reaches_any_log(
    db_url: str, hook: Hook, everything_logged: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    hook.on("/hook", Answer(503, b"busy"), Answer(200, b"ok"))
    settings = api_settings(
        db_url,
        jobs_api_keys=f"{ADMIN_KEY},{ADMIN_KEY_2}",
        jobs_tenant_keys=f"acme:{TENANT_KEY}",
        cron_secret=CRON_SECRET,
        jobs_http_signing_secret=SIGNING_SECRET,
        jobs_http_allow_hosts="127.0.0.1",
        jobs_encryption_keys=ENCRYPTION_KEY,
    )
    app = create_app(settings)
    client = app.test_client()
    try:
        # Every outcome path, each payload carrying the marker.
        post(client, "/api/jobs", {"type": "test.greet", "payload": {"name": MARKER}}, ADMIN, 201)
        fail = {"type": "test.fail", "payload": {"secret": MARKER}, "maxAttempts": 2, "backoff": NO_DELAY}
        post(client, "/api/jobs", fail, TENANT, 201)
        http = {
            "url": hook.url(f"/hook?token={MARKER}"),
            "headers": {"Authorization": f"Bearer {MARKER}"},
            "body": {"secret": MARKER},
        }
        batch = [
            {"type": "test.permanent", "payload": {"secret": MARKER}},
            {
                "type": "test.sleep",
                "payload": {"seconds": 1.3, "secret": MARKER},
                "timeoutSeconds": 1,
                "maxAttempts": 1,
            },
            {"type": "test.sensitive", "payload": {"card": MARKER, "token": MARKER}},
            {"type": "http", "payload": http, "backoff": NO_DELAY, "idempotencyKey": "hook-1"},
        ]
        post(client, "/api/jobs/batch", {"jobs": batch}, ADMIN_BEARER, 201)
        # A stored payload that no longer fits its type's model (the model changed since): pydantic's
        # own error text would quote it.
        stale = post(client, "/api/jobs", {"type": "test.greet", "payload": {"name": "x"}}, ADMIN, 201)
        queue = app_state(app).queue
        with queue.engine.begin() as conn:
            changed = {"name": MARKER, "extra": MARKER}
            conn.execute(sa.update(jobs).where(jobs.c.id == uuid.UUID(stale["id"])).values(payload=changed))
        # Refusals: bad keys, keys on the wrong route, an invalid payload holding the marker.
        post(client, "/api/jobs", {"type": "noop"}, {"x-api-key": WRONG_KEY}, 401)
        post(client, "/api/jobs", {"type": "noop"}, {"Authorization": f"Bearer {WRONG_KEY}"}, 401)
        post(client, "/api/jobs", {"type": "noop"}, {"x-api-key": CRON_SECRET}, 401)
        post(client, "/api/jobs", {"type": "noop"}, CRON, 403)
        post(client, "/api/jobs/process", None, TENANT, 403)
        post(client, "/api/jobs", {"type": "test.greet", "payload": {"name": 5, MARKER: MARKER}}, ADMIN, 422)
        post(client, "/api/jobs", {"type": "nope", "payload": {"x": MARKER}}, ADMIN, 422)

        # Retries are due at once (no delay): one drain runs every attempt.
        drained = post(client, "/api/jobs/process?maxJobs=20", None, CRON, 200)
        assert (drained["processed"], drained["succeeded"], drained["retried"], drained["failed"]) == (
            9,
            3,
            2,
            4,
        )
        assert post(client, "/api/jobs/process", None, ADMIN, 200)["processed"] == 0
        for path, headers in (
            ("/api/jobs", ADMIN),
            ("/api/jobs/status", TENANT),
            ("/api/jobs/metrics", ADMIN),
        ):
            assert client.get(path, headers=headers).status_code == 200
        assert count(queue, "status = 'completed'") == 3 and count(queue, "status = 'failed'") == 4
        mismatch = client.get(f"/api/jobs/{stale['id']}", headers=ADMIN).get_json()["lastError"]
        assert mismatch == "ValidationError: Greeting is not valid: extra: Extra inputs are not permitted"
    finally:
        app_state(app).dispose()
    assert hook.seen[0].headers["Sluice-Signature"].startswith("v1=")  # the signed path ran

    out, err = capfd.readouterr()
    records = everything_logged.records
    logged = "\n".join(
        [everything_logged.text, out, err]
        + [record.getMessage() for record in records]
        + [record.exc_text or "" for record in records]
    )
    # The capture works: every kind of event the run produced is in it.
    for event in ("job.start", "job.finish", "job.fail", "job.timeout", "drain.finish"):
        assert f'"event":"{event}"' in logged, event
    assert any(record.name.startswith("sqlalchemy") for record in records), "SQL was not logged"
    leaked = [name for name, secret in SECRETS.items() if secret in logged]
    assert leaked == [], f"found in the logs: {leaked}"


# Loggers of the libraries Sluice drives: a host may turn any of them to DEBUG.
LIBRARY_LOGGERS = (
    "sqlalchemy",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "alembic",
    "botocore",
    "boto3",
    "urllib3",
    "s3transfer",
)
ARCHIVE_BUCKET = "sluice-log-secrecy"
SENDER = "no-reply@example.com"


def test_library_loggers_at_debug_see_no_payload_key_or_result(
    db_url: str,
    aws_mock: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """SQLAlchemy's statement, parameter and row logs, the pool's, Alembic's, botocore's request
    and response logs (S3 archive, SES e-mail) and urllib3's: at DEBUG, none holds a payload, an
    idempotency key or a result."""
    from lib import aws
    from lib.config import get_settings

    monkeypatch.setenv("JOBS_EMAIL_FROM", SENDER)
    get_settings.cache_clear()
    aws.client("ses", "us-east-1").verify_email_identity(EmailAddress=SENDER)
    aws.client("s3", "us-east-1").create_bucket(Bucket=ARCHIVE_BUCKET)
    caplog.set_level(logging.DEBUG)
    for name in LIBRARY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    settings = api_settings(db_url, jobs_api_keys=ADMIN_KEY, jobs_archive_s3_bucket=ARCHIVE_BUCKET)
    app = create_app(settings)
    client = app.test_client()
    try:
        queue = app_state(app).queue
        queue.migrate()  # Alembic's log (nothing to apply)
        greet = {"type": "test.greet", "payload": {"name": MARKER}, "idempotencyKey": f"key-{MARKER}"}
        made = post(client, "/api/jobs", greet, ADMIN, 201)
        assert post(client, "/api/jobs", greet, ADMIN, 200)["id"] == made["id"]  # read back by its key
        mail = {"to": ["ada@example.com"], "subject": f"Hi {MARKER}", "text": f"Your code: {MARKER}"}
        post(client, "/api/jobs", {"type": "email.ses", "payload": mail}, ADMIN, 201)
        assert post(client, "/api/jobs/process", None, ADMIN, 200)["succeeded"] == 2
        done = client.get(f"/api/jobs/{made['id']}", headers=ADMIN).get_json()
        assert MARKER in done["result"]["greeting"]
        assert client.get("/api/jobs", headers=ADMIN).status_code == 200
        cleaned = post(client, "/api/jobs/cleanup", {"completedOlderThanSeconds": 0}, ADMIN, 200)
        assert cleaned["archived"] == 2
        post(client, "/api/tenants/acme/erase", None, ADMIN, 200)
    finally:
        app_state(app).dispose()
        get_settings.cache_clear()
    out, err = capfd.readouterr()
    records = caplog.records
    logged = "\n".join(
        [caplog.text, out, err]
        + [record.getMessage() for record in records]
        + [record.exc_text or "" for record in records]
    )
    names = {record.name.split(".")[0] for record in records}
    assert {"sqlalchemy", "botocore", "alembic"} <= names, names  # the capture works
    leaked = [line for line in logged.splitlines() if MARKER in line]
    assert leaked == [], f"found in the logs: {leaked[:3]}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jobs_tenant_keys", f"acme:{TENANT_KEY},{ADMIN_KEY}"),
        ("jobs_encryption_keys", f"{ENCRYPTION_KEY},{WRONG_KEY}"),
        ("jobs_drain_budget_ms", CRON_SECRET),
    ],
)
def test_a_refused_setting_does_not_echo_its_value(field: str, value: str) -> None:
    """Settings errors reach stderr (the CLI prints them, a crashing app logs them)."""
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(**{field: value})
    text = str(refused.value)
    assert field in text
    assert [name for name, secret in SECRETS.items() if secret in text] == []
