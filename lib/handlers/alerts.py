"""``alert.deadletter``: deliver a dead-letter digest to JOBS_ALERT_WEBHOOK_URL and/or by e-mail
(SES, JOBS_ALERT_EMAIL_FROM → JOBS_ALERT_EMAIL_TO). Each destination is reached once per digest:
a retry skips the ones an earlier attempt already reached (checkpointed on the job)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..alerts import ALERT_TYPE, MAX_ITEMS, post_webhook, render
from ..context import JobContext
from ..errors import PermanentError
from ..registry import job
from ..retry import Backoff
from .email_ses import send


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, extra="forbid", frozen=True
    )


class FailedItem(_Wire):
    id: str
    type: str
    tenant_id: str | None = None
    last_error: str | None = None


class Digest(_Wire):
    count: Annotated[int, Field(ge=1)]
    items: list[FailedItem] = Field(default_factory=list, max_length=MAX_ITEMS)


@job(
    ALERT_TYPE,
    payload=Digest,
    max_attempts=5,
    timeout=30,
    backoff=Backoff("exponential", 30, 3600),
    internal=True,
)
def deliver(payload: Digest, ctx: JobContext) -> dict[str, Any]:
    if ctx.tenant_id is not None:
        # Sluice opens digests without a tenant; a tenant's row of this type is not one of them.
        raise PermanentError("not a digest Sluice made (it has a tenant); nothing was sent")
    settings = ctx.settings
    done: dict[str, Any] = dict(ctx.saved_checkpoint() or {})
    text = render(payload.count, payload.items)
    if settings.jobs_alert_webhook_url and not done.get("webhook"):
        timeout = max(1.0, min(10.0, ctx.time_left()))
        done["webhook"] = post_webhook(settings.jobs_alert_webhook_url, text, timeout)
        ctx.checkpoint(done)
    if settings.alert_email_to and settings.jobs_alert_email_from and not done.get("messageId"):
        noun = "job" if payload.count == 1 else "jobs"
        done["messageId"] = send(
            sender=settings.jobs_alert_email_from,
            to=settings.alert_email_to,
            subject=f"Sluice: {payload.count} {noun} failed",
            text=text,
        )
        ctx.checkpoint(done)
    return done
