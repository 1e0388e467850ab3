"""HTTP plumbing every route module shares: the error shape, JSON bodies, query parameters.

Everything here raises ApiError (or lets a lib SluiceError through); ``install()`` turns both,
Flask's own 404/405/413 and any stray exception into ``{"error": {"code", "message", "details"?}}``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import pydantic
import sqlalchemy as sa
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter, Map
from werkzeug.routing import ValidationError as NoRouteMatch

from lib.db import explain
from lib.errors import RateLimited, SluiceError
from lib.logs import log_event

from ._state import current_settings

M = TypeVar("M", bound=pydantic.BaseModel)

logger = logging.getLogger("sluice")

# A payload may nest 32 levels (API.md); the whole body gets a little more room for its envelope
# ({"jobs": [{"payload": ...}]}), and the walk below never recurses, so depth costs no stack.
MAX_PAYLOAD_DEPTH = 32
MAX_BODY_DEPTH = 40

STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "validation_error": 422,
    "unknown_job_type": 422,
    "rate_limited": 429,
    "unavailable": 503,
    "not_configured": 503,
}

_CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}

_DIGITS = re.compile(r"[0-9]+")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class ApiError(Exception):
    """An HTTP-level refusal: ``raise ApiError(403, "forbidden", "admin key required")``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def invalid(loc: str, msg: str, message: str | None = None) -> ApiError:
    """A 422 validation_error naming one location (a body field or a query parameter)."""
    return ApiError(422, "validation_error", message or f"{loc}: {msg}", [{"loc": loc, "msg": msg}])


# -- responses -----------------------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    response = Response(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return json_response({"error": error}, status, headers)


# -- request bodies ------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """1e400 would become infinity, which JSON (and PostgreSQL) can't hold."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def read_json_object(max_depth: int = MAX_BODY_DEPTH) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError: 413 too large, 400 malformed JSON (NaN and
    Infinity and 1e400 included) / invalid UTF-8 / not an object, 422 nested deeper than
    ``max_depth`` or a string (keys too) holding U+0000 or an unpaired surrogate. The Content-Type
    is not required: curl -d sends a form type."""
    limit = current_settings().jobs_max_body_bytes
    too_large = ApiError(413, "payload_too_large", f"the request body exceeds {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    raw = read_body(limit, too_large)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the request body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise invalid("body", f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to read
        raise ApiError(400, "bad_request", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    check_json(value, max_depth)
    return value


def read_body(limit: int, too_large: Exception) -> bytes:
    """At most ``limit`` bytes of body, whatever its framing: a chunked body has no length to
    check up front, and its stream hands out a chunk per read, so read until the end or past
    the limit (never more than limit + 1 bytes are kept)."""
    stream = request.stream
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise too_large
    return b"".join(parts)


def check_json(value: Any, max_depth: int, loc: str = "") -> None:
    """422 when ``value`` nests deeper than ``max_depth`` ({} and [] count one level) or holds
    U+0000 or an unpaired surrogate in any string or key. Iterative: hostile input can't exhaust
    the stack."""
    stack: list[tuple[Any, int, str]] = [(value, 0, loc)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            _check_text(item, where or "body")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth + 1 > max_depth:
            raise invalid(where or "body", f"nested deeper than {max_depth} levels")
        pairs: Iterable[tuple[Any, Any]] = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            child_loc = f"{where}.{key}" if where else str(key)
            if isinstance(key, str):
                _check_text(key, where or "body", "keys ")
            stack.append((child, depth + 1, child_loc))


def _check_text(text: str, loc: str, what: str = "") -> None:
    """U+0000 and lone surrogates (JSON can spell both) can't be stored: PostgreSQL refuses them."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise invalid(loc, f"{what}must not contain U+0000")
    raise invalid(loc, f"{what}must not contain unpaired surrogates (\\ud800-\\udfff)")


def pydantic_details(exc: pydantic.ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic errors → [{"loc": "payload.x", "msg"}], locs in the body's own (camelCase) names."""
    details = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        parts = [prefix] if prefix else []
        parts += [str(part) for part in err["loc"]]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        details.append({"loc": ".".join(parts) or "body", "msg": msg})
    return details


def validate_body(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """``data`` as ``model`` by wire (camelCase) names only; snake_case names count as unknown."""
    try:
        return model.model_validate(data, by_alias=True, by_name=False)
    except pydantic.ValidationError as exc:
        details = pydantic_details(exc, prefix)
        first = details[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        raise ApiError(422, "validation_error", f"{first['loc']}: {first['msg']}{more}", details) from None


# -- query parameters ----------------------------------------------------------------------------
# An empty value (?status=) counts as absent, as HTML forms and cron URL builders produce them.


def query_str(name: str) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if "\x00" in value:
        raise invalid(name, "must not contain U+0000")
    return value


def query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """Digits only (no sign, no spaces, no "1e3"), within [minimum, maximum]."""
    value = query_str(name)
    if value is None:
        return default
    if not _DIGITS.fullmatch(value):
        raise invalid(name, "must be an integer written in digits")
    number = int(value) if len(value) <= 18 else maximum + 1
    if not minimum <= number <= maximum:
        raise invalid(name, f"must be between {minimum} and {maximum}")
    return number


def query_choice(name: str, choices: Iterable[str]) -> str | None:
    value = query_str(name)
    allowed = tuple(choices)
    if value is not None and value not in allowed:
        raise invalid(name, f"must be one of {', '.join(allowed)}")
    return value


# -- routing -------------------------------------------------------------------------------------


def reserved_segments(url_map: Map) -> frozenset[str]:
    """Last segments of the static routes: words an ``<id:...>`` never matches."""
    return frozenset(
        rule.rule.rstrip("/").rsplit("/", 1)[-1] for rule in url_map.iter_rules() if not rule.arguments
    )


class IdConverter(BaseConverter):
    """``<id:job_id>``: one path segment that is not the last segment of a static route, so
    ``/api/jobs/<id:job_id>`` never swallows ``/api/jobs/status`` & co. (GET /api/jobs/batch is 405,
    not a lookup of a job called "batch")."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, *args, **kwargs)
        self._reserved: frozenset[str] | None = None

    def to_python(self, value: str) -> str:
        if self._reserved is None:
            # Routes are all added before the first request (Flask enforces it).
            self._reserved = reserved_segments(self.map)
        if value in self._reserved:
            raise NoRouteMatch()
        return value


# -- error handling ------------------------------------------------------------------------------


def _from_sluice(exc: SluiceError) -> Response:
    status = STATUS_BY_CODE.get(exc.code)
    if status is None:
        return _internal(exc)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return error_response(status, exc.code, exc.message, exc.details, headers)


def _from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status < 400:
        # A routing redirect (e.g. a strict-slash rule): cron callers don't follow them.
        return error_response(404, "not_found", "no such path")
    headers = {}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.valid_methods or ()))
        message = f"{request.method} is not allowed here"
    elif status == 404:
        message = "no such path"
    elif status == 413:
        message = f"the request body exceeds {current_settings().jobs_max_body_bytes} bytes"
    else:
        message = exc.description or exc.name
    code = _CODE_BY_HTTP_STATUS.get(status, exc.name.lower().replace(" ", "_"))
    if status == 413:
        code = "payload_too_large"
    return error_response(status, code, message, headers=headers)


def _internal(exc: BaseException) -> Response:
    log_event("http.error", method=request.method, path=request.path, error=type(exc).__name__)
    logger.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "internal error (a bug in Sluice); see the server log")


def _unavailable(exc: sa.exc.SQLAlchemyError) -> Response:
    log_event("http.unavailable", path=request.path, error=type(exc).__name__)
    explained = explain(exc, current_settings().database_url)
    if explained is not None:
        return error_response(STATUS_BY_CODE[explained.code], explained.code, explained.message)
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        return error_response(503, "unavailable", "the database is unavailable; try again")
    return _internal(exc)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def install(app: Flask) -> None:
    """Error handlers, no-store on every response, and routing without redirects."""
    app.url_map.strict_slashes = False  # /api/jobs/ is /api/jobs, never a 308
    app.url_map.merge_slashes = False  # //api/jobs is a 404, never a redirect
    app.url_map.redirect_defaults = False
    app.url_map.converters["id"] = IdConverter
    app.register_error_handler(
        ApiError, lambda e: error_response(e.status, e.code, e.message, e.details, e.headers)
    )
    app.register_error_handler(SluiceError, _from_sluice)
    app.register_error_handler(HTTPException, _from_http)
    # Connection faults that escape lib's own guard (pool timeouts included) are the database's.
    app.register_error_handler(sa.exc.OperationalError, _unavailable)
    app.register_error_handler(sa.exc.InterfaceError, _unavailable)
    app.register_error_handler(sa.exc.TimeoutError, _unavailable)
    # A query on a database that is not migrated (no such table) is a setup problem, not a bug.
    app.register_error_handler(sa.exc.ProgrammingError, _unavailable)
    app.register_error_handler(Exception, _internal)
    app.after_request(_no_store)
