"""Schedules on the wire: what PUT /api/schedules/<name> takes and what the API shows."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from ..errors import ValidationError
from ..models import BackoffSpec, JobOptions, Text255
from ..store import schedules as store
from .slots import check_cron, check_timezone

NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
OPTION_FIELDS = {"priority", "max_attempts", "timeout_seconds", "backoff"}
# Stored only when given, so the options of schedules that use none of them stay as they were.
FLOW_OPTION_FIELDS = {"concurrency_key", "concurrency_limit", "callback_url"}


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    return value


CronText = Annotated[
    str, Field(min_length=1, max_length=255), AfterValidator(_no_nul), AfterValidator(check_cron)
]
ZoneName = Annotated[
    str, Field(min_length=1, max_length=64), AfterValidator(_no_nul), AfterValidator(check_timezone)
]


class ScheduleSpec(JobOptions):
    """A schedule as PUT /api/schedules/<name> takes it: camelCase, strict, unknown fields refused."""

    cron: CronText
    timezone: ZoneName = "UTC"
    type: Text255
    payload: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    catch_up: bool = False

    @model_validator(mode="after")
    def _no_burst_options(self) -> ScheduleSpec:
        # A slot's job is keyed by its slot (idempotencyKey) and names no earlier jobs.
        if self.debounce is not None or self.after is not None:
            raise ValueError("a schedule takes no debounce or after (its jobs are one per slot)")
        return self

    def options(self) -> dict[str, Any]:
        """The job options a slot's job gets (tenantId has a column of its own)."""
        options = self.model_dump(mode="json", by_alias=True, include=OPTION_FIELDS)
        flow = self.model_dump(mode="json", by_alias=True, include=FLOW_OPTION_FIELDS, exclude_none=True)
        return {**options, **flow}


class Schedule(BaseModel):
    """A stored schedule as the API shows it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    name: str
    cron: str
    timezone: str
    type: str
    payload: dict[str, Any]
    enabled: bool
    catch_up: bool
    priority: int
    max_attempts: int | None
    timeout_seconds: int | None
    backoff: BackoffSpec | None
    tenant_id: str | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: str | None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _schedule(row: store.ScheduleRow) -> Schedule:
    options = row.options or {}
    backoff = options.get("backoff")
    return Schedule(
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        type=row.type,
        payload=row.payload,
        enabled=row.enabled,
        catch_up=row.catch_up,
        priority=options.get("priority", 0),
        max_attempts=options.get("maxAttempts"),
        timeout_seconds=options.get("timeoutSeconds"),
        backoff=BackoffSpec.model_validate(backoff) if backoff else None,
        tenant_id=row.tenant_id,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        last_job_id=str(row.last_job_id) if row.last_job_id else None,
    )


def _details(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(str(p) for p in err["loc"]) or "body", "msg": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def parse_spec(body: ScheduleSpec | Mapping[str, Any]) -> ScheduleSpec:
    """A ScheduleSpec from a spec or a camelCase mapping; lib.errors.ValidationError otherwise."""
    if isinstance(body, ScheduleSpec):
        return body
    try:
        return ScheduleSpec.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        raise ValidationError("the schedule is not valid", _details(exc)) from None


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(
            "schedule names are 1–100 characters of A-Z a-z 0-9 . _ -",
            [{"loc": "name", "msg": "must match [A-Za-z0-9._-]{1,100}"}],
        )
    return name
