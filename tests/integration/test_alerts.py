"""Dead-letter alerts on both databases: one digest per burst, delivered once, never about itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Queue, aws
from lib.alerts import ALERT_TYPE
from tests.support.alerts import alert_payloads, fail_jobs, set_env
from tests.support.db import count, make_queue
from tests.support.webhook import Webhook

SENDER = "alerts@example.com"


@pytest.fixture
def alerting(db_url: str, env: pytest.MonkeyPatch, webhook: Webhook) -> Iterator[Queue]:
    set_env(env, jobs_alert_webhook_url=webhook.url, jobs_alert_digest_seconds="0")
    q = make_queue(db_url)
    yield q
    q.engine.dispose()


def test_a_thousand_failures_make_one_digest(db_url: str, env: pytest.MonkeyPatch, webhook: Webhook) -> None:
    set_env(env, jobs_alert_webhook_url=webhook.url)  # digest window: the default 60 s
    q = make_queue(db_url, jobs_batch_size=300)
    try:
        fail_jobs(q, 1000)
        summary = q.drain(max_jobs=1000)
        assert (summary.processed, summary.failed) == (1000, 1000)
        [digest] = alert_payloads(q)
        assert digest["count"] == 1000 and len(digest["items"]) == 20
        assert {tuple(sorted(item)) for item in digest["items"]} == {("id", "lastError", "tenantId", "type")}
        assert {item["lastError"] for item in digest["items"]} == {"RuntimeError: boom"}
        assert count(q, f"type = '{ALERT_TYPE}' AND status = 'pending' AND priority = 1000") == 1
        assert q.status().scheduled == 1  # due when the digest window closes, not yet
        # More failures inside the window join the same digest.
        fail_jobs(q, 5, "test.permanent")
        assert q.drain(max_jobs=10).failed == 5
        [digest] = alert_payloads(q)
        assert digest["count"] == 1005 and len(digest["items"]) == 20
        assert webhook.bodies == []
    finally:
        q.engine.dispose()


def test_no_destination_no_alert_job(queue: Queue, env: pytest.MonkeyPatch) -> None:
    env.delenv("JOBS_ALERT_WEBHOOK_URL", raising=False)
    env.delenv("JOBS_ALERT_EMAIL_TO", raising=False)
    fail_jobs(queue, 3)
    assert queue.drain().failed == 3
    assert count(queue, f"type = '{ALERT_TYPE}'") == 0


def test_digest_is_posted_once_to_the_webhook(alerting: Queue, webhook: Webhook) -> None:
    queue = alerting
    fail_jobs(queue, 3, "test.permanent")
    summary = queue.drain(max_jobs=10)
    assert (summary.failed, summary.succeeded) == (3, 1)  # the digest ran in the same drain
    [sent] = webhook.bodies
    assert sent["type"] == "application/json"
    assert set(sent["json"]) == {"text"}
    assert sent["json"]["text"].startswith("Sluice: 3 jobs failed (dead-lettered).")
    assert sent["json"]["text"].count("test.permanent") == 3
    [alert] = [queue.get(str(i)) for i in _alert_ids(queue)]
    assert alert.status == "completed" and alert.result == {"webhook": 200}
    assert queue.drain().processed == 0 and len(webhook.bodies) == 1


def test_a_failing_alert_does_not_alert_about_itself(alerting: Queue, webhook: Webhook) -> None:
    queue = alerting
    webhook.status = 500
    fail_jobs(queue, 2, "test.permanent")
    assert queue.drain(max_jobs=2).failed == 2
    with queue.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE sluice_jobs SET max_attempts = 1 WHERE type = '{ALERT_TYPE}'"))
    summary = queue.drain(max_jobs=10)
    assert (summary.processed, summary.failed) == (1, 1)
    assert len(webhook.bodies) == 1
    [alert] = [queue.get(str(i)) for i in _alert_ids(queue)]
    assert alert.status == "failed" and "500" in (alert.last_error or "")
    assert count(queue, f"type = '{ALERT_TYPE}'") == 1
    assert queue.drain().processed == 0


def test_digest_by_email_through_ses(db_url: str, env: pytest.MonkeyPatch, aws_mock: None) -> None:
    set_env(
        env,
        jobs_alert_email_to="ops@example.com,oncall@example.com",
        jobs_alert_email_from=SENDER,
        jobs_alert_digest_seconds="0",
    )
    env.delenv("JOBS_ALERT_WEBHOOK_URL", raising=False)
    ses = aws.client("ses", "us-east-1")
    ses.verify_email_identity(EmailAddress=SENDER)
    q = make_queue(db_url)
    try:
        fail_jobs(q, 1, "test.permanent")
        assert q.drain().succeeded == 1
        [alert] = [q.get(str(i)) for i in _alert_ids(q)]
        assert alert.status == "completed" and set(alert.result) == {"messageId"}
        assert len(sent_messages()) == 1
        assert ses.get_send_quota()["SentLast24Hours"] == 2  # moto counts recipients
    finally:
        q.engine.dispose()


def sent_messages() -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def _alert_ids(queue: Queue) -> list[str]:
    with queue.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id FROM sluice_jobs WHERE type = '{ALERT_TYPE}'")).scalars()
        return [str(r) for r in rows]
