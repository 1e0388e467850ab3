"""``email.ses``: e-mail through Amazon SES, sent at most once per job even across retries.

Right after SES accepts a message its id is stored on the job (a fenced checkpoint); a later
attempt of the same job finds it and returns it instead of sending again. Addresses, subjects and
bodies are never logged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .. import aws
from ..config import Settings, get_settings
from ..context import JobContext
from ..errors import PermanentError, RetryLater, ValidationError
from ..logs import log_event
from ..registry import job
from ..retry import Backoff

MAX_RECIPIENTS = 50  # SES: to + cc + bcc of one message
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]"
_ADDR = rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_DOMAIN}"
# "user@example.com" or "Display Name <user@example.com>"; never a CR or LF (header injection).
_ADDRESS = re.compile(rf"(?:{_ADDR})|(?:[^<>\"\r\n\x00]{{0,100}}<{_ADDR}>)")
# SES refuses these for good: retrying cannot help.
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerified",
        "MailFromDomainNotVerifiedException",
        "ConfigurationSetDoesNotExist",
        "InvalidParameterValue",
    }
)
THROTTLED_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException"})


def check_address(value: str) -> str:
    value = value.strip()
    if len(value) > 320 or not _ADDRESS.fullmatch(value):
        raise ValueError("is not an e-mail address (user@example.com or Name <user@example.com>)")
    return value


def _one_line(value: str) -> str:
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("must be one line (no CR, LF or U+0000)")
    return value


Address = Annotated[str, AfterValidator(check_address)]


class Email(BaseModel):
    """The payload: ``to`` (1–50 addresses), ``cc``, ``bcc``, ``subject``, ``text`` and/or ``html``,
    ``replyTo``, ``from`` (default JOBS_EMAIL_FROM), ``userId`` (the rate-limit key)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )

    to: list[Address] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: Annotated[str, Field(min_length=1, max_length=998), AfterValidator(_one_line)]
    text: str | None = Field(None, min_length=1)
    html: str | None = Field(None, min_length=1)
    reply_to: list[Address] = Field(default_factory=list, max_length=10)
    sender: Address | None = Field(None, alias="from")
    # JOBS_RATE_LIMITS="email.ses=50/hour" limits sends per userId; jobs without one are not limited.
    user_id: Annotated[str, Field(min_length=1, max_length=255)] | int | None = None

    @model_validator(mode="after")
    def _complete(self) -> Email:
        if self.text is None and self.html is None:
            raise ValueError("give text or html (or both)")
        if len(self.to) + len(self.cc) + len(self.bcc) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together")
        return self


def _check_sender(payload: dict[str, Any], settings: Settings) -> None:
    if not payload.get("from") and not settings.jobs_email_from:
        raise ValidationError(
            "the e-mail has no sender",
            [{"loc": "payload.from", "msg": "required when JOBS_EMAIL_FROM is not set"}],
        )


def send(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    region: str | None = None,
) -> str:
    """Send one message with SES ``send_email``; returns its message id. Permanent refusals raise
    PermanentError, throttling RetryLater; anything else propagates (the job retries)."""
    from botocore.exceptions import ClientError  # lazy: botocore is loaded with boto3, by SES sends only

    body: dict[str, Any] = {}
    if text is not None:
        body["Text"] = {"Data": text, "Charset": "UTF-8"}
    if html is not None:
        body["Html"] = {"Data": html, "Charset": "UTF-8"}
    ses = aws.client("ses", region or get_settings().aws_region_name)
    try:
        response = ses.send_email(
            Source=sender,
            Destination={"ToAddresses": list(to), "CcAddresses": list(cc), "BccAddresses": list(bcc)},
            Message={"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body},
            ReplyToAddresses=list(reply_to),
        )
    except ClientError as exc:
        code = aws.error_code(exc)
        if code in PERMANENT_CODES:
            raise PermanentError(f"SES refused the message ({code})") from exc
        if code in THROTTLED_CODES:
            raise RetryLater(f"SES is throttling ({code})", 60.0) from exc
        raise
    return str(response["MessageId"])


@job(
    "email.ses",
    payload=Email,
    max_attempts=5,
    timeout=30,
    backoff=Backoff("exponential", 30, 3600),
    check=_check_sender,
    rate_key="payload.userId",
)
def send_email(payload: Email, ctx: JobContext) -> dict[str, str]:
    earlier = ctx.saved_checkpoint()
    if isinstance(earlier, dict) and isinstance(earlier.get("messageId"), str):
        # An earlier attempt was accepted by SES and then failed later (or its outcome was lost).
        log_event("email.already_sent", jobId=ctx.job_id, attempt=ctx.attempt)
        return {"messageId": earlier["messageId"]}
    sender = payload.sender or ctx.settings.jobs_email_from
    if not sender:
        raise PermanentError("the e-mail has no sender: give 'from' or set JOBS_EMAIL_FROM")
    message_id = send(
        sender=sender,
        to=payload.to,
        cc=payload.cc,
        bcc=payload.bcc,
        subject=payload.subject,
        text=payload.text,
        html=payload.html,
        reply_to=payload.reply_to,
    )
    ctx.checkpoint({"messageId": message_id})
    log_event("email.sent", jobId=ctx.job_id, recipients=len(payload.to) + len(payload.cc) + len(payload.bcc))
    return {"messageId": message_id}
