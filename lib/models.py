"""Typed values at the edges: what comes in (JobSpec) and what goes out (Job, summaries).

Wire names are camelCase; Python code may use either name. Input models are strict: no
coercion of "5" to 5, unknown fields refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .retry import Backoff

JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "processing", "completed", "failed", "cancelled")
FINISHED_STATUSES: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")
DrainSource = Literal["cron", "api", "cli", "kick", "fanout"]
StopReason = Literal["maxJobs", "empty", "budget"]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    return value


# Tenant ids travel in URL paths (/api/tenants/<id>/erase), key settings and logs: a plain alphabet.
TENANT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,255}")
TENANT_ID_RULE = "1..255 characters of A-Z a-z 0-9 . _ : @ -"


def check_tenant_id(value: str) -> str:
    if not TENANT_ID.fullmatch(value):
        raise ValueError(f"a tenant id is {TENANT_ID_RULE}")
    return value


def _iso_datetime(value: Any) -> Any:
    """Accept an ISO 8601 string or a datetime; anything else (numbers included) is refused."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise ValueError("must be an ISO 8601 time with a UTC offset") from exc
    if isinstance(value, datetime):
        return value
    raise ValueError("must be an ISO 8601 time string")


def _aware_in_range(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (e.g. 2026-11-23T10:00:00Z)")
    # The year is the UTC one; 9999-12-31T23:00-02:00 overflows datetime once converted.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("year must be between 1970 and 9999 (in UTC)") from None
    if not 1970 <= utc.year <= 9999:
        raise ValueError("year must be between 1970 and 9999 (in UTC)")
    return utc


Text255 = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]
TenantId = Annotated[
    str,
    AfterValidator(check_tenant_id),
    WithJsonSchema({"type": "string", "pattern": f"^{TENANT_ID.pattern}$", "minLength": 1, "maxLength": 255}),
]
AwareTime = Annotated[datetime, BeforeValidator(_iso_datetime), AfterValidator(_aware_in_range)]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True, frozen=True
    )


class BackoffSpec(_Wire):
    strategy: Literal["exponential", "fixed", "linear"] = "exponential"
    delay_seconds: int = Field(10, ge=0, le=86_400)
    max_delay_seconds: int = Field(3600, ge=0, le=86_400)

    def policy(self) -> Backoff:
        return Backoff(self.strategy, self.delay_seconds, self.max_delay_seconds)


class DebounceSpec(_Wire):
    """A burst of enqueues with one key runs once, ``seconds`` after the last, with its payload."""

    key: Text255
    seconds: int = Field(ge=1, le=86_400)


MAX_AFTER = 100
MAX_CALLBACK_URL_CHARS = 2048


class JobOptions(_Wire):
    """Options shared by an enqueue and a schedule."""

    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout_seconds: int | None = Field(None, ge=1, le=900)
    backoff: BackoffSpec | None = None
    tenant_id: TenantId | None = None
    # Flow control (lib/flow.py).
    concurrency_key: Text255 | None = None
    concurrency_limit: int | None = Field(None, ge=1, le=1000)
    debounce: DebounceSpec | None = None
    after: list[Text255] | None = Field(None, min_length=1, max_length=MAX_AFTER)
    callback_url: str | None = Field(None, min_length=1, max_length=MAX_CALLBACK_URL_CHARS)

    @model_validator(mode="after")
    def _flow_options(self) -> JobOptions:
        if self.concurrency_limit is not None and self.concurrency_key is None:
            raise ValueError("concurrencyLimit needs a concurrencyKey")
        if self.debounce is not None and self.after is not None:
            raise ValueError("give debounce or after, not both")
        return self


class JobSpec(JobOptions):
    """One job to enqueue, as the API and the Python library accept it."""

    type: Text255
    payload: dict[str, Any] = Field(default_factory=dict)
    run_at: AwareTime | None = Field(None, strict=False)
    delay_seconds: int | None = Field(None, ge=0, le=315_360_000)
    idempotency_key: Text255 | None = None
    correlation_id: Text255 | None = None

    @model_validator(mode="after")
    def _one_start_time(self) -> JobSpec:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give runAt or delaySeconds, not both")
        if self.debounce is not None and self.idempotency_key is not None:
            raise ValueError("give debounce or idempotencyKey, not both")
        if self.after is not None and (self.run_at is not None or self.delay_seconds is not None):
            raise ValueError("a job with after runs when those jobs complete: no runAt or delaySeconds")
        if self.debounce is not None and (self.run_at is not None or self.delay_seconds is not None):
            raise ValueError(
                "a debounced job runs debounce.seconds after the last enqueue: no runAt or delaySeconds"
            )
        return self


class JobBatch(_Wire):
    # defer_build here and below: built by the first request that uses the model, not at import.
    model_config = ConfigDict(defer_build=True)

    jobs: list[JobSpec] = Field(min_length=1, max_length=1000)


class BulkRequest(_Wire):
    """Which jobs a bulk retry or cancel acts on: every filter given must match."""

    model_config = ConfigDict(defer_build=True)

    ids: list[Text255] | None = Field(None, max_length=1000)
    status: JobStatus | None = None
    type: Text255 | None = None
    tenant_id: TenantId | None = None
    created_before: AwareTime | None = Field(None, strict=False)
    dry_run: bool = False
    limit: int = Field(1000, ge=1, le=10_000)

    @model_validator(mode="after")
    def _some_filter(self) -> BulkRequest:
        if self.ids is None and not any((self.status, self.type, self.tenant_id, self.created_before)):
            raise ValueError("give at least one filter: ids, status, type, tenantId or createdBefore")
        return self


class BulkResult(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, defer_build=True)

    # Jobs the filters select that are in a state the action applies to (up to limit).
    matched: int
    # Jobs actually moved (0 on a dry run).
    changed: int


class Job(BaseModel):
    """A job as stored: built from database rows without re-validation."""

    # Every field is in every answer; ``step`` has a default only so that a client still reads
    # the answers of a server that predates it.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        json_schema_serialization_defaults_required=True,
    )

    id: str
    type: str
    payload: dict[str, Any]
    status: JobStatus
    priority: int
    attempts: int
    max_attempts: int
    timeout_seconds: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    result: Any
    progress: int | None
    tenant_id: str | None
    correlation_id: str
    idempotency_key: str | None
    step: str | None = None
    # Flow control; defaults only so a client still reads the answers of an older server.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    debounce_key: str | None = None
    after: list[str] | None = None
    callback_url: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class JobPage(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, defer_build=True)

    jobs: list[Job]
    next_cursor: str | None


class Enqueued(BaseModel):
    """The job an enqueue produced, and whether it is new (False: idempotency key reused)."""

    model_config = ConfigDict(frozen=True)

    job: Job
    created: bool


class DrainSummary(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, defer_build=True)

    processed: int
    succeeded: int
    retried: int
    failed: int
    duration_ms: int
    remaining: int
    stopped_by: StopReason
    # Types claimed that no handler here knows (JOBS_HANDLER_MODULES); not part of the API's summary.
    unknown_types: tuple[str, ...] = Field((), exclude=True)


class DrainRecord(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, defer_build=True)

    at: datetime
    source: DrainSource
    processed: int
    duration_ms: int
    stopped_by: StopReason


class QueueStatus(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, defer_build=True)

    counts: dict[JobStatus, int]
    ready: int
    scheduled: int
    oldest_ready_age_seconds: float | None
    by_type: dict[str, dict[str, int]]
    last_drain: DrainRecord | None
    pending: list[Job]


class StepInfo(BaseModel):
    """A durable step a job finished (``ctx.step``/``ctx.sleep``); its result stays on the job."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, defer_build=True)

    name: str
    finished_at: datetime
    # Size of the stored result (JSON text, UTF-8 bytes); for a sleep, the wake time's.
    result_bytes: int
