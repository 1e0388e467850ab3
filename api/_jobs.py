"""The /api/jobs routes: enqueue, batch, read, list, cancel, retry, process (drain), status."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel

from lib.deployment import OwnDeployment, own_deployment
from lib.errors import ValidationError
from lib.fanout import FANOUT_HEADER, MAX_FANOUT, FanOut, extra_calls, merge
from lib.kick import KICK_HEADER
from lib.models import (
    JOB_STATUSES,
    TENANT_ID,
    TENANT_ID_RULE,
    BulkRequest,
    BulkResult,
    DrainSource,
    DrainSummary,
    Job,
    JobBatch,
    JobPage,
    JobSpec,
    JobStatus,
    QueueStatus,
    StepInfo,
)

from ._auth import require_admin, require_key
from ._http import (
    MAX_PAYLOAD_DEPTH,
    ApiError,
    check_json,
    invalid,
    json_response,
    query_choice,
    query_int,
    query_str,
    read_json_object,
    reserved_segments,
    validate_body,
)
from ._openapi import DOC_ONLY, ApiDoc, path_param, query_param
from ._state import current_queue, current_settings

bp = Blueprint("jobs", __name__)

# maxJobs of a drain called with an API key and no maxJobs (CRON_SECRET: JOBS_CRON_MAX_JOBS).
DEFAULT_MAX_JOBS = 10


class Attempt(BaseModel):
    """One attempt of a job, as ``GET /api/jobs/<id>/attempts`` lists it."""

    model_config = DOC_ONLY

    attempt: int
    startedAt: str | None  # noqa: N815 - the wire name
    finishedAt: str  # noqa: N815
    durationMs: int | None  # noqa: N815
    outcome: Literal["completed", "retried", "failed", "lease_expired", "released", "deferred"]
    error: str | None
    traceback: str | None


class AttemptList(BaseModel):
    """``{"attempts": [attempt, ...], "steps": [step, ...]}``, oldest first."""

    model_config = DOC_ONLY

    attempts: list[Attempt]
    # The durable steps the job finished (ctx.step, ctx.sleep), in the order they finished.
    steps: list[StepInfo]


class JobList(BaseModel):
    """``{"jobs": [job, ...]}``: what a batch enqueue answers."""

    model_config = DOC_ONLY

    jobs: list[Job]


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _check_payload(spec: Any, loc: str) -> None:
    """API.md: a payload nested deeper than 32 levels is 422 (checked before any model runs)."""
    if isinstance(spec, dict) and "payload" in spec:
        check_json(spec["payload"], MAX_PAYLOAD_DEPTH, loc)


def _check_payloads(specs: Sequence[JobSpec]) -> None:
    """Types and payloads one by one first, so a refusal names its job (jobs.3.payload.x)."""
    queue = current_queue()
    for index, spec in enumerate(specs):
        try:
            queue.registry.public(spec.type).validate_payload(spec.payload, queue.settings)
        except ValidationError as exc:
            details = exc.details if isinstance(exc.details, list) else []
            located = [{**item, "loc": f"jobs.{index}.{item.get('loc', '')}"} for item in details]
            raise type(exc)(f"jobs.{index}: {exc.message}", located) from None


@bp.post("/api/jobs")
def enqueue() -> Response:
    caller = require_key()
    body = read_json_object()
    _check_payload(body, "payload")
    spec = validate_body(JobSpec, body)
    queue = current_queue()
    queue.registry.public(spec.type)  # internal types (digests, ...) are Sluice's own: 422
    made = queue.submit(spec, tenant=caller.tenant)
    if not made.created:
        return json_response(made.job.to_wire(), 200)
    return json_response(made.job.to_wire(), 201, {"Location": f"/api/jobs/{made.job.id}"})


@bp.post("/api/jobs/batch")
def enqueue_batch() -> Response:
    caller = require_key()
    body = read_json_object()
    jobs = body.get("jobs")
    if isinstance(jobs, list):
        for index, spec in enumerate(jobs):
            _check_payload(spec, f"jobs.{index}.payload")
    batch = validate_body(JobBatch, body)
    _check_payloads(batch.jobs)
    made = current_queue().submit_many(batch.jobs, tenant=caller.tenant)
    return json_response({"jobs": [item.job.to_wire() for item in made]}, 201)


@bp.get("/api/jobs")
def list_jobs() -> Response:
    caller = require_key()
    status = cast(JobStatus | None, query_choice("status", JOB_STATUSES))
    type_ = query_str("type")
    tenant = query_str("tenantId")
    if tenant is not None and not TENANT_ID.fullmatch(tenant):
        raise invalid("tenantId", f"a tenant id is {TENANT_ID_RULE}")
    limit = query_int("limit", 50, 1, 500)
    cursor = query_str("cursor")
    if caller.tenant is not None:
        if tenant not in (None, caller.tenant):
            raise ApiError(403, "forbidden", "a tenant key may only list its own tenant's jobs")
        tenant = caller.tenant
    page = current_queue().list(
        status=status,
        type=type_,
        tenant=tenant,
        limit=limit,
        cursor=cursor,
    )
    return json_response(_dump(page))


@bp.route("/api/jobs/process", methods=["GET", "POST"])
def process() -> Response:
    caller = require_admin(allow_cron=True)
    settings = current_settings()
    # A cron tick is bounded by its budget; API callers keep the documented default of 10.
    default_max = settings.jobs_cron_max_jobs if caller.role == "cron" else DEFAULT_MAX_JOBS
    max_jobs = query_int("maxJobs", default_max, 1, 10_000)
    budget_ms = query_int("budgetMs", settings.jobs_drain_budget_ms, 100, 800_000)
    fan_out = query_int("fanOut", 1, 1, MAX_FANOUT)
    target = own_deployment(settings)
    if fan_out > 1 and target is None:
        raise invalid(
            "fanOut",
            "needs JOBS_PUBLIC_URL (or Vercel's VERCEL_URL) to call this app; a request's Host is never used",
        )
    source = _drain_source(caller.role)
    queue = current_queue()
    started = time.monotonic()
    helpers = _start_fan_out(target, queue.backlog, fan_out, max_jobs, budget_ms)
    summary = queue.drain(max_jobs=max_jobs, budget_ms=budget_ms, source=source)
    if helpers is not None:
        summary = merge(summary, helpers.wait().results, round((time.monotonic() - started) * 1000))
    return json_response(_dump(summary))


def _drain_source(role: str) -> DrainSource:
    """Who started this drain, as the history records it: a fan-out call of another drain, a
    cron service (the cron secret, or Vercel Cron's user agent when it sends an API key, as the
    dev server's emulator does), a kick an enqueue sent (lib/kick.py), or an API caller."""
    if request.headers.get(FANOUT_HEADER):
        return "fanout"
    if request.headers.get(KICK_HEADER):
        return "kick"
    if role == "cron" or request.headers.get("User-Agent", "").startswith("vercel-cron/"):
        return "cron"
    return "api"


def _start_fan_out(
    target: OwnDeployment | None, backlog: Callable[[], int], fan_out: int, max_jobs: int, budget_ms: int
) -> FanOut | None:
    """Extra drains of this endpoint when the backlog is bigger than one drain; one level only
    (the extra calls carry FANOUT_HEADER) and with the caller's own credential."""
    if target is None or fan_out <= 1 or request.headers.get(FANOUT_HEADER):
        return None
    calls = extra_calls(fan_out, backlog(), max_jobs)
    if not calls:
        return None
    url = f"{target.base_url}/api/jobs/process?maxJobs={max_jobs}&budgetMs={budget_ms}"
    credential = {k: v for k, v in request.headers.items() if k.lower() in ("x-api-key", "authorization")}
    return FanOut(url, {**target.headers, **credential}, timeout=budget_ms / 1000 + 15).start(calls)


@bp.get("/api/jobs/status")
def status() -> Response:
    caller = require_key()
    return json_response(_dump(current_queue().status(tenant=caller.tenant)))


@bp.get("/api/jobs/<id:job_id>")
def get_job(job_id: str) -> Response:
    caller = require_key()
    return json_response(current_queue().get(job_id, tenant=caller.tenant).to_wire())


@bp.post("/api/jobs/<id:job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    caller = require_key()
    return json_response(current_queue().cancel(job_id, tenant=caller.tenant).to_wire())


@bp.post("/api/jobs/<id:job_id>/retry")
def retry_job(job_id: str) -> Response:
    caller = require_key()
    return json_response(current_queue().retry(job_id, tenant=caller.tenant).to_wire())


@bp.get("/api/jobs/<id:job_id>/attempts")
def job_attempts(job_id: str) -> Response:
    caller = require_key()
    queue = current_queue()
    found = queue.attempts(job_id, tenant=caller.tenant)
    done = queue.steps(job_id, tenant=caller.tenant)
    return json_response({"attempts": [item.to_wire() for item in found], "steps": _dump_steps(done)})


def _dump_steps(done: list[StepInfo]) -> list[Any]:
    return [step.model_dump(mode="json", by_alias=True) for step in done]


@bp.post("/api/jobs/retry")
def bulk_retry() -> Response:
    caller = require_key()
    request_ = validate_body(BulkRequest, read_json_object())
    return json_response(_dump(current_queue().bulk_retry(request_, tenant=caller.tenant)))


@bp.post("/api/jobs/cancel")
def bulk_cancel() -> Response:
    caller = require_key()
    request_ = validate_body(BulkRequest, read_json_object())
    return json_response(_dump(current_queue().bulk_cancel(request_, tenant=caller.tenant)))


# -- OpenAPI ---------------------------------------------------------------------------------------


def document(doc: ApiDoc) -> None:
    # The id is opaque, but never a word that names a sibling route (/api/jobs/status is no job).
    reserved = sorted(reserved_segments(current_app.url_map))
    id_schema = {"type": "string", "minLength": 1, "pattern": "^[^/]+$", "not": {"enum": reserved}}
    job_id = path_param("id", "the job's id (opaque; an id that isn't one is simply not found)", id_schema)
    doc.operation(
        "POST",
        "/api/jobs",
        summary="Enqueue one job",
        auth="key",
        body=JobSpec,
        example={"type": "noop", "payload": {}, "priority": 5, "idempotencyKey": "order-42"},
        ok={
            201: ("the new job", Job),
            200: (
                "the job that already has this idempotencyKey, or the pending job holding this debounce "
                "key (its payload replaced, its runAt moved to now + debounce.seconds)",
                Job,
            ),
        },
        description="A tenant key enqueues for its own tenant (another tenantId is 403).",
    )
    doc.operation(
        "POST",
        "/api/jobs/batch",
        summary="Enqueue 1..1000 jobs, all or nothing",
        auth="key",
        body=JobBatch,
        example={"jobs": [{"type": "noop"}, {"type": "noop", "delaySeconds": 60}]},
        ok={201: ("the jobs, in the order given", JobList)},
    )
    doc.operation(
        "GET",
        "/api/jobs",
        summary="List jobs, newest first",
        auth="key",
        parameters=(
            query_param("status", {"type": "string", "enum": list(JOB_STATUSES)}, "only jobs in this state"),
            query_param("type", {"type": "string"}, "only jobs of this type"),
            query_param(
                "tenantId", {"type": "string", "pattern": f"^{TENANT_ID.pattern}$"}, "only this tenant's jobs"
            ),
            query_param(
                "limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size"
            ),
            query_param("cursor", {"type": "string"}, "nextCursor of the previous page"),
        ),
        ok={200: ("a page of jobs", JobPage)},
    )
    doc.operation(
        "GET", "/api/jobs/{id}", summary="One job", auth="key", parameters=(job_id,),
        ok={200: ("the job", Job)}, errors=(404,),
    )  # fmt: skip
    for verb, summary in (("cancel", "Cancel a pending job"), ("retry", "Retry a failed or cancelled job")):
        doc.operation(
            "POST", f"/api/jobs/{{id}}/{verb}", summary=summary, auth="key", parameters=(job_id,),
            ok={200: ("the job afterwards", Job)}, errors=(404, 409),
        )  # fmt: skip
    doc.operation(
        "GET", "/api/jobs/{id}/attempts", summary="A job's attempts, oldest first", auth="key",
        parameters=(job_id,), ok={200: ("outcome, error and the handler's traceback of each attempt; "
        "the durable steps the job finished", AttemptList)}, errors=(404,),
        description="Tracebacks hold the handler's frames (at most 8,000 characters), never payload values. "
        "Steps list names and sizes, never results.",
    )  # fmt: skip
    for verb, does in (("retry", "Retry failed and cancelled jobs"), ("cancel", "Cancel pending jobs")):
        doc.operation(
            "POST", f"/api/jobs/{verb}", summary=f"{does} in bulk, by filter", auth="key", body=BulkRequest,
            example={"type": "email.send", "status": "failed", "dryRun": True},
            ok={200: ("how many jobs matched, and how many changed (0 on a dry run)", BulkResult)},
            description="At least one filter; every filter given must match. A tenant key acts on its "
            "own jobs only (another tenantId is 403).",
        )  # fmt: skip
    drain_params = (
        query_param(
            "maxJobs",
            {"type": "integer", "minimum": 1, "maximum": 10_000, "default": DEFAULT_MAX_JOBS},
            "jobs at most; with CRON_SECRET the default is JOBS_CRON_MAX_JOBS (1000)",
        ),
        query_param(
            "budgetMs",
            {"type": "integer", "minimum": 100, "maximum": 800_000},
            "default JOBS_DRAIN_BUDGET_MS",
        ),
        query_param(
            "fanOut",
            {"type": "integer", "minimum": 1, "maximum": MAX_FANOUT, "default": 1},
            "when the backlog exceeds maxJobs, run up to this many drains at once by calling this "
            "endpoint fanOut-1 more times with the same credential (one level deep); counts add up. "
            "The calls go to JOBS_PUBLIC_URL, else to the Vercel deployment's own URL; without either, "
            "fanOut above 1 is 422",
        ),
    )
    for method in ("GET", "POST"):
        doc.operation(
            method, "/api/jobs/process", summary="Drain: run due jobs within maxJobs and a time budget",
            auth="admin_or_cron", parameters=drain_params, ok={200: ("what this drain did", DrainSummary)},
        )  # fmt: skip
    doc.operation(
        "GET", "/api/jobs/status", summary="Queue overview", auth="key",
        ok={200: ("counts, ready/scheduled, last drain, the next ready jobs", QueueStatus)},
        description="A tenant key sees only its jobs, and lastDrain null.",
    )  # fmt: skip
