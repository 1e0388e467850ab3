"""The OpenAPI 3.1 document, built from the same pydantic models the routes validate and emit.

Each route module has ``document(doc: ApiDoc)`` that calls ``doc.operation(...)`` once per method
and path; create_app collects them and ``GET /api/openapi.json`` builds the document once per app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonSchemaMode, models_json_schema

Auth = Literal["public", "key", "admin", "admin_or_cron"]

REF_TEMPLATE = "#/components/schemas/{model}"


# The models of this document only: built when the document is (defer_build), not at import.
DOC_ONLY = ConfigDict(defer_build=True)


class ErrorInfo(BaseModel):
    model_config = ConfigDict(title="ErrorInfo", defer_build=True)

    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    """Every error response: ``{"error": {"code", "message", "details"?}}``."""

    model_config = DOC_ONLY

    error: ErrorInfo


class Health(BaseModel):
    model_config = DOC_ONLY

    status: Literal["ok", "unavailable", "misconfigured"]
    # With "misconfigured": the setting at fault and why (never a secret).
    problem: str | None = None


@dataclass(frozen=True)
class Ref:
    """A model to be replaced by its ``$ref`` once every model's schema name is known."""

    model: type[BaseModel]
    mode: JsonSchemaMode = "serialization"


ERROR_DESCRIPTIONS = {
    400: "bad_request: malformed JSON (NaN and Infinity included), invalid UTF-8, body not an object",
    401: "unauthorized: missing or wrong credentials (comes with WWW-Authenticate: Bearer)",
    403: "forbidden: a valid credential that may not do this",
    404: "not_found",
    405: "method_not_allowed (comes with Allow)",
    409: "conflict: the job is not in a state that allows this",
    413: "payload_too_large: the body exceeds JOBS_MAX_BODY_BYTES",
    422: "validation_error or unknown_job_type; details list {loc, msg}",
    429: "rate_limited (comes with Retry-After)",
    503: "unavailable (database unreachable) or not_configured (no API key, a setting or handler module "
    "that cannot work, or a database that is not migrated: the message says which)",
}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string"},
        "description": description,
    }


class ApiDoc:
    """Collects operations; ``build()`` resolves models to ``#/components/schemas/...``."""

    def __init__(self, title: str = "Sluice", version: str = "1.0.0") -> None:
        self.title = title
        self.version = version
        self.paths: dict[str, dict[str, Any]] = {}

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        auth: Auth,
        ok: dict[int, tuple[str, Any]],
        errors: tuple[int, ...] = (),
        parameters: tuple[dict[str, Any], ...] = (),
        body: type[BaseModel] | None = None,
        example: Any = None,
        tag: str = "jobs",
        description: str | None = None,
    ) -> None:
        """One operation. ``ok`` maps success codes to (description, model | Ref | schema | None);
        ``errors`` lists the error codes this route can produce itself (auth, 405, body parsing
        and 422 for parameters are added here); ``example`` is a valid request body."""
        codes = set(errors) | {405}
        if auth != "public":
            codes |= {401, 403, 429, 503}
        if parameters and any(p["in"] == "query" for p in parameters):
            codes.add(422)
        if body is not None:
            codes |= {400, 413, 422}
        responses: dict[str, Any] = {str(code): self._content(*spec) for code, spec in ok.items()}
        for code in sorted(codes):
            responses[str(code)] = self._content(ERROR_DESCRIPTIONS[code], Ref(Error))
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method.lower()}{path.replace('/', '_').replace('{', '').replace('}', '')}",
            "tags": [tag],
            "responses": responses,
        }
        if description:
            op["description"] = description
        if parameters:
            op["parameters"] = list(parameters)
        if body is not None:
            media: dict[str, Any] = {"schema": Ref(body, "validation")}
            if example is not None:
                media["example"] = example
            op["requestBody"] = {"required": True, "content": {"application/json": media}}
        if auth == "public":
            op["security"] = []
        elif auth == "admin_or_cron":
            op["description"] = (op.get("description", "") + " Admin key or CRON_SECRET (Bearer).").strip()
        elif auth == "admin":
            op["description"] = (op.get("description", "") + " Admin key only.").strip()
        self.paths.setdefault(path, {})[method.lower()] = op

    def _content(self, description: str, schema: Any) -> dict[str, Any]:
        if schema is None:
            return {"description": description}
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = Ref(schema)
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def build(self) -> dict[str, Any]:
        used: dict[Ref, None] = {}
        _collect(self.paths, used)
        mapping, defs = models_json_schema(
            [(ref.model, ref.mode) for ref in used], by_alias=True, ref_template=REF_TEMPLATE
        )
        refs = {ref: mapping[(ref.model, ref.mode)] for ref in used}
        return {
            "openapi": "3.1.0",
            "info": {
                "title": self.title,
                "version": self.version,
                "description": "A job queue for serverless Python apps. Every error is "
                '{"error": {"code", "message", "details"?}}; every response is Cache-Control: no-store.',
            },
            "paths": _resolve(self.paths, refs),
            "components": {
                "schemas": defs.get("$defs", {}),
                "securitySchemes": {
                    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                    "bearer": {"type": "http", "scheme": "bearer"},
                },
            },
            "security": [{"apiKey": []}, {"bearer": []}],
        }


def _collect(value: Any, out: dict[Ref, None]) -> None:
    if isinstance(value, Ref):
        out[value] = None
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect(item, out)


def _resolve(value: Any, refs: dict[Ref, Any]) -> Any:
    if isinstance(value, Ref):
        return refs[value]
    if isinstance(value, dict):
        return {key: _resolve(item, refs) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, refs) for item in value]
    return value
