"""Dead-letter alerts: jobs that become ``failed`` raise one digest, never a message per job.

Inside the drain's transaction the ids that just failed are folded into the open digest (an
``alert.deadletter`` job due JOBS_ALERT_DIGEST_SECONDS after the failure that opened it), or a new
digest is opened. 1,000 failures in a drain make one job. The digest names at most 20 jobs (id,
type, tenant, truncated error; never payloads). A digest that itself fails raises no alert.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from .core import Core
from .logs import log_event
from .models import JobSpec
from .store import alerts as store
from .store.jobs import insert_jobs
from .store.ratelimit import lock

ALERT_TYPE = "alert.deadletter"
KEY_PREFIX = "alert:deadletter:"
PRIORITY = 1000  # alerts go first, and the open digest is found by the claim index
MAX_ITEMS = 20
MAX_ERROR_CHARS = 300
WEBHOOK_TIMEOUT_SECONDS = 10.0
# A digest is due JOBS_ALERT_DIGEST_SECONDS after it opens; one due later than that (plus clock
# slack) was not opened by this deployment's settings and is never extended.
DUE_SLACK_SECONDS = 5.0


def _item(job: store.FailedJob) -> dict[str, Any]:
    error = job.last_error
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    return {"id": str(job.id), "type": job.type, "tenantId": job.tenant_id, "lastError": error}


class DeadLetterHook:
    """``Drainer.on_failed``: no alert destination configured, no alert job."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def __call__(self, conn: sa.Connection, ids: list[uuid.UUID]) -> None:
        if not self.core.settings.alerts_configured or ALERT_TYPE not in self.core.registry:
            return
        count, failed = store.failed_jobs(conn, ids, ALERT_TYPE, MAX_ITEMS)
        if count:
            add_to_digest(self.core, conn, count, [_item(job) for job in failed])


def add_to_digest(core: Core, conn: sa.Connection, count: int, items: Sequence[dict[str, Any]]) -> None:
    """Fold ``count`` failures into the open digest, or open one (in the caller's transaction)."""
    # Concurrent drains take turns, so they extend one digest instead of opening two.
    lock(conn, "sluice.alert.deadletter")
    window = core.settings.jobs_alert_digest_seconds + DUE_SLACK_SECONDS
    current = store.open_digest(conn, ALERT_TYPE, KEY_PREFIX, PRIORITY, window)
    if current is not None:
        job_id, payload = current
        merged = {
            "count": int(payload.get("count", 0)) + count,
            "items": [*payload.get("items", []), *items][:MAX_ITEMS],
        }
        if store.set_payload(conn, job_id, merged):
            return
    spec = JobSpec(
        type=ALERT_TYPE,
        payload={"count": count, "items": list(items)[:MAX_ITEMS]},
        priority=PRIORITY,
        delay_seconds=core.settings.jobs_alert_digest_seconds,
    )
    digest = core.prepare(spec)
    # Keyed by its own id: the mark of a digest Sluice made (open_digest checks it).
    digest.idempotency_key = store.digest_key(KEY_PREFIX, digest.id)
    insert_jobs(conn, [digest])
    log_event("alert.digest_opened", failed=count)


def render(count: int, items: Sequence[Any]) -> str:
    """The digest as plain text (Slack shows it as is)."""
    noun = "job" if count == 1 else "jobs"
    lines = [f"Sluice: {count} {noun} failed (dead-lettered)."]
    for item in items:
        tenant = f" tenant={item.tenant_id}" if item.tenant_id else ""
        lines.append(f"• {item.type} {item.id}{tenant}: {item.last_error or 'no error recorded'}")
    if count > len(items):
        lines.append(f"… and {count - len(items)} more: GET /api/jobs?status=failed")
    return "\n".join(lines)


def post_webhook(url: str, text: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> int:
    """POST ``{"text": ...}`` (Slack-compatible) to the operator's webhook; returns the status.
    A non-2xx answer raises (the alert job retries with backoff)."""
    import urllib.request  # lazy: only a digest that is sent loads urllib.request

    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(  # noqa: S310 (the operator's own http(s) URL, checked by Settings)
        url,
        data=body,
        headers={"Content-Type": "application/json", "User-Agent": "sluice-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        status = int(response.status)
    log_event("alert.webhook_sent", host=urlsplit(url).hostname, status=status)
    return status
