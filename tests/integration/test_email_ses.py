"""The built-in email.ses type against moto's SES, on both databases: sent once across retries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from lib import Queue, ValidationError, aws
from lib.config import get_settings
from lib.handlers import email_ses
from lib.schema import jobs
from tests.support.db import count, make_queue

SENDER = "Shop <no-reply@example.com>"


def sent_messages() -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


@pytest.fixture
def mail(db_url: str, aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    monkeypatch.setenv("JOBS_EMAIL_FROM", SENDER)
    get_settings.cache_clear()
    aws.client("ses", "us-east-1").verify_email_identity(EmailAddress="no-reply@example.com")
    q = make_queue(db_url)
    yield q
    q.engine.dispose()
    get_settings.cache_clear()


def email(**extra: Any) -> dict[str, Any]:
    return {"to": ["ada@example.com"], "subject": "Your order", "text": "Shipped.", **extra}


def due_now(queue: Queue, job_id: str) -> None:
    with queue.engine.begin() as conn:
        conn.execute(
            sa.update(jobs).where(jobs.c.id == uuid.UUID(job_id)).values(run_at=sa.func.current_timestamp())
        )


def test_sends_and_stores_the_message_id(mail: Queue) -> None:
    job = mail.enqueue(
        "email.ses", email(cc=["b@example.com"], html="<p>Shipped.</p>", replyTo=["help@example.com"])
    )
    assert job.max_attempts == 5
    assert mail.drain().succeeded == 1
    done = mail.get(job.id)
    [message] = sent_messages()
    assert done.status == "completed" and done.result == {"messageId": message.id}
    assert message.source == SENDER and message.destinations["ToAddresses"] == ["ada@example.com"]
    assert message.subject == "Your order"


def test_a_retry_after_sending_does_not_send_again(mail: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    real_log = email_ses.log_event

    def crash_after_send(event: str, **fields: Any) -> None:
        if event == "email.sent":
            raise RuntimeError("worker died after SES accepted the message")
        real_log(event, **fields)

    monkeypatch.setattr(email_ses, "log_event", crash_after_send)
    job = mail.enqueue("email.ses", email(), backoff={"strategy": "fixed", "delaySeconds": 60})
    first = mail.drain()
    assert (first.processed, first.retried) == (1, 1)
    after_first = mail.get(job.id)
    assert after_first.status == "pending" and after_first.attempts == 1
    [message] = sent_messages()
    assert after_first.result == {"messageId": message.id}  # the checkpoint survived the failure
    due_now(mail, job.id)
    assert mail.drain().succeeded == 1
    done = mail.get(job.id)
    assert done.status == "completed" and done.attempts == 2
    assert done.result == {"messageId": message.id}
    assert len(sent_messages()) == 1


def test_unverified_sender_fails_at_once(mail: Queue) -> None:
    job = mail.enqueue("email.ses", email(**{"from": "stranger@elsewhere.example"}))
    assert mail.drain().failed == 1
    failed = mail.get(job.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert "MessageRejected" in (failed.last_error or "")
    assert sent_messages() == []


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        (email(to=[]), "payload.to"),
        (email(to=["not an address"]), "payload.to.0"),
        (email(to=[f"u{i}@example.com" for i in range(51)]), "payload.to"),
        (
            email(cc=[f"u{i}@example.com" for i in range(30)], bcc=[f"b{i}@example.com" for i in range(30)]),
            "payload",
        ),
        (email(subject="Hi\r\nBcc: victim@example.com"), "payload.subject"),
        (email(to=["a@example.com\r\nBcc: x@example.com"]), "payload.to.0"),
        ({"to": ["a@example.com"], "subject": "s"}, "payload"),
        (email(nope=1), "payload.nope"),
        (email(userId=True), "payload.userId"),
        (email(**{"from": "Bad <x>"}), "payload.from"),
    ],
)
def test_bad_payloads_are_refused_at_enqueue(mail: Queue, payload: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as err:
        mail.enqueue("email.ses", payload)
    assert err.value.details[0]["loc"].startswith(loc), err.value.details
    assert count(mail) == 0


def test_a_sender_is_required_somewhere(db_url: str, aws_mock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBS_EMAIL_FROM", raising=False)
    get_settings.cache_clear()
    q = make_queue(db_url)
    try:
        with pytest.raises(ValidationError) as err:
            q.enqueue("email.ses", email())
        assert err.value.details == [
            {"loc": "payload.from", "msg": "required when JOBS_EMAIL_FROM is not set"}
        ]
        assert q.enqueue("email.ses", email(**{"from": "x@example.com"})).payload["from"] == "x@example.com"
    finally:
        q.engine.dispose()
        get_settings.cache_clear()
