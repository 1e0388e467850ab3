"""Operator tools: the dashboard's static files and the Prometheus metrics.

The dashboard's files are public (they hold no data); everything it shows comes from the
authenticated JSON API, with the key the operator types in.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response

from ._auth import require_admin
from ._http import ApiError
from ._openapi import ApiDoc
from ._state import current_queue

bp = Blueprint("dashboard", __name__)

# Outside api/: Vercel makes every .js file under api/ a function of its own.
STATIC = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Only our own files, no inline script, nothing framed: a leaked page can't run foreign code.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@lru_cache(maxsize=len(ASSETS))
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _asset(name: str) -> Response:
    response = Response(_read(name), content_type=ASSETS[name])
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("/")
@bp.get("/dashboard")
def dashboard() -> Response:
    return _asset("index.html")


@bp.get("/dashboard/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise ApiError(404, "not_found", "no such path")
    return _asset(name)


@bp.get("/api/jobs/metrics")
def metrics() -> Response:
    from lib.metrics import CONTENT_TYPE  # lazy: only a scrape loads the metrics (and prometheus_client)

    require_admin()
    return Response(current_queue().metrics.render(), content_type=CONTENT_TYPE)


def document(doc: ApiDoc) -> None:
    doc.operation(
        "GET",
        "/api/jobs/metrics",
        summary="Prometheus metrics (text exposition format 0.0.4)",
        auth="admin",
        ok={200: ("the metrics, every name prefixed sluice_", None)},
        description="Job counts by status and type, ready/scheduled, oldest ready age, drain history.",
    )
    ok = doc.paths["/api/jobs/metrics"]["get"]["responses"]["200"]
    ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
