"""Public routes: the health check and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response

from lib.errors import ConfigError

from ._http import json_response
from ._openapi import ApiDoc, Health
from ._state import app_state

bp = Blueprint("meta", __name__)


@bp.get("/api/health")
def health() -> Response:
    """Public and secret-free: whether the configuration can work and the database answers,
    migrated. A problem is named (setting and cause, never a value that could be a secret)."""
    state = app_state()
    problem = state.problem
    if problem is not None:
        return json_response({"status": "misconfigured", "problem": problem}, 503)
    found = state.queue.check_database()
    if found is None:
        return json_response({"status": "ok"})
    if isinstance(found, ConfigError):
        return json_response({"status": "misconfigured", "problem": found.message}, 503)
    return json_response({"status": "unavailable"}, 503)


@bp.get("/api/openapi.json")
def openapi() -> Response:
    state = app_state()
    if state.openapi is None:
        doc = ApiDoc()
        for describe in state.documenters:
            describe(doc)
        state.openapi = doc.build()
    return json_response(state.openapi)


def document(doc: ApiDoc) -> None:
    doc.operation(
        "GET", "/api/health", summary="Is the database reachable?", auth="public", tag="meta",
        ok={200: ("the database answers", Health),
            503: ("the database is unreachable, or misconfigured (problem says what)", Health)},
    )  # fmt: skip
    doc.operation(
        "GET", "/api/openapi.json", summary="This document", auth="public", tag="meta",
        ok={200: ("the OpenAPI 3.1 document", {"type": "object"})},
    )  # fmt: skip
