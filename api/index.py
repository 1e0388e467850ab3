"""The Sluice HTTP API: ``app = create_app()`` (WSGI; Vercel serves it, or ``gunicorn api.index:app``).

Routes stay thin: parse and validate, authorize, call lib, serialise. To add a group of routes,
write ``api/_<group>.py`` (the underscore keeps Vercel from making it a function of its own) with
a Blueprint ``bp`` and ``document(doc: ApiDoc)``, and list the module in ROUTE_MODULES below:

    from flask import Blueprint, Response
    from ._auth import require_admin, require_key
    from ._http import ApiError, json_response, query_int, read_json_object, validate_body
    from ._openapi import ApiDoc, path_param
    from ._state import current_queue, current_settings

    bp = Blueprint("schedules", __name__)

    @bp.put("/api/schedules/<name>")
    def put_schedule(name: str) -> Response:
        require_admin()                           # 503/401/403 as API.md says; returns the Caller
        body = read_json_object()                 # 413/400/422 (depth, U+0000) handled
        spec = validate_body(ScheduleSpec, body)  # 422 with details [{"loc": "payload.x", "msg"}]
        ...
        return json_response(schedule.model_dump(mode="json", by_alias=True))

    def document(doc: ApiDoc) -> None:
        doc.operation("PUT", "/api/schedules/{name}", summary="...", auth="admin",
                      parameters=(path_param("name", "..."),), body=ScheduleSpec,
                      ok={200: ("the schedule", Schedule)}, errors=(404,))

Helpers:
- ``require_key(allow_cron=False) -> Caller``: an admin or tenant key. ``caller.tenant`` is the
  acting tenant (None for admins): pass it as ``tenant=`` to lib. ``require_admin(allow_cron=False)``:
  admin only (tenant key → 403). The cron secret only counts where ``allow_cron=True``.
- ``read_json_object(max_depth=40)``; ``check_json(value, max_depth, loc)`` for a payload's 32 levels.
- ``validate_body(Model, data, prefix="")``: pydantic by camelCase names only, unknown fields → 422.
- ``query_int(name, default, lo, hi)``, ``query_str(name)``, ``query_choice(name, choices)``: 422
  on bad values; unknown query parameters are ignored; an empty value counts as absent.
- ``raise ApiError(status, code, message, details=None, headers=None)``, or raise any lib
  SluiceError (its ``.code`` picks the status); ``error_response(...)``/``json_response(...)``.
- ``<id:job_id>`` in a rule never matches a word that ends a static route (``status``, ``batch``),
  so siblings are never swallowed. Trailing slashes are served like the bare path; no redirects.
"""

from __future__ import annotations

import logging
from types import ModuleType

import pydantic
from flask import Flask

# Absolute, so a host that loads this file by path (not as api.index) still finds its helpers.
from api import _dashboard, _http, _jobs, _kick, _maintenance, _meta
from api._state import EXTENSION, SluiceState
from lib import Queue
from lib.config import Settings, get_settings, settings_problem
from lib.logs import configure

# Each module: a Blueprint ``bp`` and ``document(doc)`` describing its operations for OpenAPI.
ROUTE_MODULES: tuple[ModuleType, ...] = (_jobs, _meta, _dashboard, _maintenance)


def create_app(settings: Settings | None = None, queue: Queue | None = None) -> Flask:
    """The app on ``settings`` (default: the environment); the Queue is built on first use unless given."""
    problem = None
    if settings is None and queue is None:
        settings, problem = read_settings()
    settings = settings or (queue.settings if queue is not None else get_settings())
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.jobs_max_body_bytes
    state = SluiceState(settings, queue, problem)
    app.extensions[EXTENSION] = state
    _http.install(app)
    _kick.install(app)
    for module in ROUTE_MODULES:
        app.register_blueprint(module.bp)
        state.documenters.append(module.document)
    return app


def read_settings() -> tuple[Settings, str | None]:
    """The environment's settings, or the defaults and the problem when a setting is refused:
    the app then answers health 503 "misconfigured" and protected routes 503 not_configured
    naming it, instead of failing to import (every route a 500)."""
    try:
        return get_settings(), None
    except pydantic.ValidationError as exc:
        return Settings.model_construct(), settings_problem(exc)


def _configure_logging() -> None:
    """JSON lines on stderr for a deployed app, unless the host already set up logging."""
    if not logging.getLogger().handlers:
        configure(read_settings()[0].jobs_log_level)


_configure_logging()
app = create_app()
