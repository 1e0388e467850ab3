"""Admin routes of the later issues: schedules, the retention run and a tenant's erasure."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel

from ._auth import require_admin
from ._http import MAX_PAYLOAD_DEPTH, check_json, json_response, read_json_object, validate_body
from ._openapi import ApiDoc, path_param
from ._state import current_queue

# lib.retention and lib.schedules are imported by the routes that use them (and by the OpenAPI
# document): a cold start that serves anything else never loads them.
bp = Blueprint("maintenance", __name__)


def _optional_body() -> dict[str, Any]:
    """The JSON object body, or {} when none was sent (cron services often POST nothing)."""
    if not request.content_length and "Transfer-Encoding" not in request.headers:
        return {}
    return read_json_object()


@bp.get("/api/schedules")
def list_schedules() -> Response:
    require_admin()
    found = current_queue().schedules.list_schedules()
    return json_response({"schedules": [item.to_wire() for item in found]})


@bp.get("/api/schedules/<name>")
def get_schedule(name: str) -> Response:
    require_admin()
    return json_response(current_queue().schedules.get_schedule(name).to_wire())


@bp.put("/api/schedules/<name>")
def put_schedule(name: str) -> Response:
    from lib.schedules import ScheduleSpec, check_name  # lazy: only schedule routes load schedules

    require_admin()
    check_name(name)
    body = read_json_object()
    if "payload" in body:
        check_json(body["payload"], MAX_PAYLOAD_DEPTH, "payload")
    spec = validate_body(ScheduleSpec, body)
    queue = current_queue()
    queue.registry.public(spec.type)  # a schedule may not make internal jobs either
    return json_response(queue.schedules.put_schedule(name, spec).to_wire())


@bp.delete("/api/schedules/<name>")
def delete_schedule(name: str) -> Response:
    require_admin()
    current_queue().schedules.delete_schedule(name)
    return Response(status=204)


@bp.post("/api/jobs/cleanup")
def run_cleanup() -> Response:
    from lib.retention import CleanupRequest  # lazy: only cleanup and erasure load retention

    require_admin()
    body = validate_body(CleanupRequest, _optional_body())
    result = current_queue().retention.cleanup(
        completed_older_than=body.completed_older_than_seconds,
        failed_older_than=body.failed_older_than_seconds,
        cancelled_older_than=body.cancelled_older_than_seconds,
        dry_run=body.dry_run,
    )
    return json_response(result.to_wire())


@bp.post("/api/tenants/<tenantId>/erase")
def erase(tenantId: str) -> Response:  # noqa: N803 (the rule's name is the documented one)
    require_admin()
    return json_response(current_queue().retention.erase_tenant(tenantId).to_wire())


# -- OpenAPI ---------------------------------------------------------------------------------------

_NAME = path_param("name", "the schedule's name", {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,100}$"})
_TENANT = path_param("tenantId", "the tenant", {"type": "string", "minLength": 1, "maxLength": 255})


def document(doc: ApiDoc) -> None:
    from lib.retention import CleanupRequest, CleanupResult, EraseResult  # lazy: the document only
    from lib.schedules import Schedule, ScheduleSpec  # lazy: the document only

    class ScheduleList(BaseModel):
        """``{"schedules": [schedule, ...]}``, sorted by name."""

        schedules: list[Schedule]

    doc.operation(
        "GET", "/api/schedules", summary="Every schedule, sorted by name", auth="admin",
        ok={200: ("the schedules", ScheduleList)}, tag="schedules",
    )  # fmt: skip
    doc.operation(
        "GET", "/api/schedules/{name}", summary="One schedule", auth="admin", parameters=(_NAME,),
        ok={200: ("the schedule", Schedule)}, errors=(404,), tag="schedules",
    )  # fmt: skip
    doc.operation(
        "PUT",
        "/api/schedules/{name}",
        summary="Create or replace a schedule",
        auth="admin",
        parameters=(_NAME,),
        body=ScheduleSpec,
        example={"cron": "0 2 * * *", "timezone": "Europe/Paris", "type": "noop", "payload": {}},
        ok={200: ("the schedule; a replace keeps lastRunAt and lastJobId", Schedule)},
        errors=(404,),
        tag="schedules",
        description="Slots follow the wall clock of timezone: a local time a DST change skips runs "
        "once at the first instant after the gap; one it repeats runs once. Bad cron or time zone: 422.",
    )
    doc.operation(
        "DELETE", "/api/schedules/{name}", summary="Delete a schedule", auth="admin", parameters=(_NAME,),
        ok={204: ("deleted", None)}, errors=(404,), tag="schedules",
    )  # fmt: skip
    doc.operation(
        "POST",
        "/api/jobs/cleanup",
        summary="Retention: delete finished jobs past their age, in bounded batches",
        auth="admin",
        body=CleanupRequest,
        example={"completedOlderThanSeconds": 86400, "dryRun": True},
        ok={200: ("what was deleted (or, with dryRun, would be) and archived", CleanupResult)},
        description="Older than S means finishedAt ≤ now − S. Never touches pending or processing "
        "jobs. The body is optional. With JOBS_ARCHIVE_S3_BUCKET, rows go to S3 before they are deleted.",
    )
    doc.operation(
        "POST",
        "/api/tenants/{tenantId}/erase",
        summary="Erase a tenant: its jobs (not processing ones), schedules and archived rows",
        auth="admin",
        parameters=(_TENANT,),
        ok={200: ("what was erased; an unknown tenant gives zeros", EraseResult)},
        errors=(404, 422),
        tag="tenants",
    )
