"""Retention: delete finished jobs past their age in bounded batches, archiving them to S3 first;
and erase everything a tenant left (jobs, schedules, archived rows).

"Older than S" means finishedAt ≤ now − S on the database clock. Pending and processing jobs are
never touched. With JOBS_ARCHIVE_S3_BUCKET set, each batch is written to S3 (gzip JSON lines of
the full rows) inside the transaction that deletes it, before the commit: a failed upload rolls
the batch back, so nothing is deleted that was not archived.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from . import aws
from .config import Settings
from .core import Core, Service
from .db import guarded
from .errors import Unavailable, ValidationError
from .logs import log_event
from .models import _Wire
from .store import maintenance as store
from .store import schedules as schedule_store

BATCH_SIZE = 1000
DRAIN_HISTORY_SECONDS = 30 * 86_400
MAX_AGE_SECONDS = 3_153_600_000
STATUSES = ("completed", "failed", "cancelled")
# Extra passes an erase makes when jobs of the tenant are still there after a short batch.
ERASE_ROUNDS = 20


class CleanupRequest(_Wire):
    """The body of POST /api/jobs/cleanup (all optional; unknown fields refused)."""

    completed_older_than_seconds: int | None = Field(None, ge=0, le=MAX_AGE_SECONDS)
    failed_older_than_seconds: int | None = Field(None, ge=0, le=MAX_AGE_SECONDS)
    cancelled_older_than_seconds: int | None = Field(None, ge=0, le=MAX_AGE_SECONDS)
    dry_run: bool = False


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class CleanupResult(_Out):
    deleted: dict[str, int]
    archived: int
    duration_ms: int


class EraseResult(_Out):
    deleted: int
    schedules: int
    processing: int


# -- the archive ---------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode_rows(rows: list[dict[str, Any]]) -> bytes:
    """Rows as gzip-compressed JSON lines (column names as keys)."""
    lines = (json.dumps(row, default=_json_value, separators=(",", ":")) for row in rows)
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)


def decode_rows(blob: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(blob).decode().splitlines() if line]


@dataclass(frozen=True, slots=True)
class Archive:
    """Where deleted rows go: s3://bucket/prefix/YYYY/MM/DD/<timestamp>-<uuid>.jsonl.gz."""

    bucket: str
    prefix: str
    region: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Archive | None:
        bucket = settings.archive_bucket
        if bucket is None:
            return None
        return cls(bucket, settings.jobs_archive_s3_prefix, settings.aws_region_name)

    def _client(self, timeout: int | None = None) -> Any:
        return aws.client("s3", self.region, timeout)

    def new_key(self, at: datetime | None = None) -> str:
        at = at or datetime.now(UTC)
        stamp = at.strftime("%Y%m%dT%H%M%S%fZ")
        return f"{self.prefix}/{at:%Y/%m/%d}/{stamp}-{uuid.uuid4().hex}.jsonl.gz".lstrip("/")

    def put(self, rows: list[dict[str, Any]], seconds_left: float | None = None) -> str:
        """Upload rows as one object; returns its key. Raises Unavailable if S3 refuses or, with
        ``seconds_left``, does not answer within about that long."""
        key = self.new_key()
        timeout = None if seconds_left is None else aws.timeout_for(seconds_left)
        try:
            self._client(timeout).put_object(
                Bucket=self.bucket, Key=key, Body=encode_rows(rows), ContentType="application/gzip"
            )
        except Exception as exc:
            log_event("archive.upload_failed", bucket=self.bucket, error=type(exc).__name__)
            raise Unavailable(
                f"archiving to s3://{self.bucket} failed ({aws.error_code(exc) or type(exc).__name__}); "
                "the batch was not deleted"
            ) from exc
        return key

    def keys(self) -> Iterator[str]:
        pages = self._client().get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if str(item["Key"]).endswith(".jsonl.gz"):
                    yield str(item["Key"])

    def erase_tenant(self, tenant: str) -> int:
        """Drop the tenant's rows from every archive object (rewritten, or deleted when nothing
        else is left in it); returns the rows removed."""
        try:
            return self._erase(tenant)
        except Exception as exc:
            raise Unavailable(
                f"erasing from s3://{self.bucket} failed ({aws.error_code(exc) or type(exc).__name__}); "
                "the database rows are gone, erase again to finish the archive"
            ) from exc

    def _erase(self, tenant: str) -> int:
        s3, removed = self._client(), 0
        needle = json.dumps(tenant)
        for key in list(self.keys()):
            text = gzip.decompress(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()).decode()
            if needle not in text:
                continue  # cheap pre-check; the rows decide below
            rows = [json.loads(line) for line in text.splitlines() if line]
            kept = [row for row in rows if row.get("tenant_id") != tenant]
            if len(kept) == len(rows):
                continue
            if kept:
                s3.put_object(
                    Bucket=self.bucket, Key=key, Body=encode_rows(kept), ContentType="application/gzip"
                )
            else:
                s3.delete_object(Bucket=self.bucket, Key=key)
            removed += len(rows) - len(kept)
        return removed


# -- cleanup -------------------------------------------------------------------------------------


def _ages(core: Core, completed: int | None, failed: int | None, cancelled: int | None) -> dict[str, int]:
    settings = core.settings
    ages = {
        "completed": settings.jobs_cleanup_completed_seconds if completed is None else completed,
        "failed": settings.jobs_cleanup_failed_seconds if failed is None else failed,
        "cancelled": settings.jobs_cleanup_cancelled_seconds if cancelled is None else cancelled,
    }
    bad = [name for name, age in ages.items() if not 0 <= age <= MAX_AGE_SECONDS]
    if bad:
        raise ValidationError(
            "ages must be 0..3153600000 seconds",
            [{"loc": f"{name}OlderThanSeconds", "msg": "out of range"} for name in bad],
        )
    return ages


def _per_type(per_type: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(per_type or {})
    for name, age in out.items():
        if not isinstance(age, int) or isinstance(age, bool) or not 0 <= age <= MAX_AGE_SECONDS:
            raise ValidationError(
                "per-type ages must be 0..3153600000 seconds", [{"loc": name, "msg": "bad age"}]
            )
    return out


# -- cleanup and erase ---------------------------------------------------------------------------


class Retention(Service):
    """The facade's ``retention``: cleanup of finished jobs and erasure of a tenant."""

    @guarded
    def cleanup(
        self,
        *,
        completed_older_than: int | None = None,
        failed_older_than: int | None = None,
        cancelled_older_than: int | None = None,
        dry_run: bool = False,
        per_type: Mapping[str, int] | None = None,
        budget_ms: int | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> CleanupResult:
        """Delete finished jobs past their age (defaults: JOBS_CLEANUP_*_SECONDS), ``per_type``
        overriding the age of some types whatever their status. Stops when nothing eligible is left
        or ``budget_ms`` (default JOBS_DRAIN_BUDGET_MS) is spent. ``dry_run`` only counts."""
        started = time.monotonic()
        ages = _ages(self.core, completed_older_than, failed_older_than, cancelled_older_than)
        types = _per_type(per_type)
        budget = (budget_ms if budget_ms is not None else self.core.settings.jobs_drain_budget_ms) / 1000
        deleted = dict.fromkeys(STATUSES, 0)
        archived = 0
        if dry_run:
            with self.core.engine.connect() as conn:
                deleted = {s: store.count_finished(conn, s, ages[s], types) for s in STATUSES}
        else:
            archive = Archive.from_settings(self.core.settings)
            for status in STATUSES:
                while time.monotonic() - started < budget:
                    with self.core.engine.begin() as conn:
                        rows = store.delete_finished(
                            conn, status, ages[status], types, batch_size, full_rows=archive is not None
                        )
                        if rows and archive is not None:
                            # Raises before the commit, the batch stays; a hanging S3 costs no more
                            # than the budget left (the batch's rows are locked meanwhile).
                            archive.put(rows, budget - (time.monotonic() - started))
                            archived += len(rows)
                    deleted[status] += len(rows)
                    if len(rows) < batch_size:
                        break
            if time.monotonic() - started < budget:
                with self.core.engine.begin() as conn:
                    store.trim_drains(conn, DRAIN_HISTORY_SECONDS, 10 * batch_size)
        result = CleanupResult(
            deleted=deleted, archived=archived, duration_ms=round((time.monotonic() - started) * 1000)
        )
        log_event("jobs.cleanup", dryRun=dry_run, **result.model_dump(by_alias=True))
        return result

    @guarded
    def erase_tenant(self, tenant: str, *, batch_size: int = BATCH_SIZE) -> EraseResult:
        """Delete every job of ``tenant`` that is not processing, its schedules, and its rows in the
        archive. Processing jobs are left to finish (counted in ``processing``); erase again later.

        A cleanup archiving the tenant's rows at the same moment is waited for: the deletes wait on
        its row locks (never skip them), and the archive is read only after they committed, when
        the cleanup's object exists."""
        if not isinstance(tenant, str) or not 1 <= len(tenant) <= 255 or "\x00" in tenant:
            raise ValidationError("not a tenant id", [{"loc": "tenantId", "msg": "1..255 characters"}])
        deleted = self._delete_tenant_jobs(tenant, batch_size)
        with self.core.engine.begin() as conn:
            schedules = schedule_store.delete_for_tenant(conn, tenant)
            processing = store.count_tenant_processing(conn, tenant)
        archive = Archive.from_settings(self.core.settings)
        archived = 0
        if archive is not None:
            # Rewrites read, filter and write whole objects: two erases at once take turns.
            with self.core.single.connect() as conn, store.archive_lock(conn):
                archived = archive.erase_tenant(tenant)
        result = EraseResult(deleted=deleted, schedules=schedules, processing=processing)
        # The tenant id is an identifier, not personal data; its rows are gone, only counts remain.
        log_event("tenant.erase", tenantId=tenant, archivedRows=archived, **result.model_dump())
        return result

    def _delete_tenant_jobs(self, tenant: str, batch_size: int) -> int:
        """Delete until none of the tenant's erasable jobs is left (re-counted in the transaction
        of the last batch: rows a concurrent cleanup rolled back come back). Unavailable, never a
        partial answer, if they keep coming back (a tenant key still enqueueing)."""
        deleted = short_rounds = 0
        while True:
            with self.core.engine.begin() as conn:
                n = store.delete_tenant_jobs(conn, tenant, batch_size)
                left = store.count_tenant_erasable(conn, tenant) if n < batch_size else None
            deleted += n
            if left == 0:
                return deleted
            if left is not None:
                short_rounds += 1
                if short_rounds > ERASE_ROUNDS:
                    raise Unavailable(
                        f"jobs of tenant {tenant!r} keep appearing while it is erased ({deleted} deleted "
                        "so far); stop what enqueues them and erase again"
                    )
