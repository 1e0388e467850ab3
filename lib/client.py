"""A small typed client for Sluice's HTTP API, on the standard library's urllib only.

    from lib.client import SluiceClient
    client = SluiceClient("https://app.example.com", api_key)
    job = client.enqueue(type="email.welcome", payload={"user_id": 7})
    client.wait(job.id, timeout=60)

Every enqueue carries an idempotencyKey (generated when absent), so a retry after a 503 or a lost
connection can never enqueue twice. Errors are lib.errors classes chosen by the API's error code.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from .errors import (
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    SluiceError,
    Unauthorized,
    Unavailable,
    UnknownJobType,
    ValidationError,
    invalid,
)
from .models import (
    FINISHED_STATUSES,
    BulkRequest,
    BulkResult,
    DrainSummary,
    Job,
    JobPage,
    JobSpec,
    JobStatus,
    QueueStatus,
)

ERRORS: dict[str, type[SluiceError]] = {
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "validation_error": ValidationError,
    "unknown_job_type": UnknownJobType,
    "unavailable": Unavailable,
    "not_configured": ConfigError,
}
# Answers a retry may cure: the database (503 unavailable), a gateway, or a rate limit.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# A Retry-After longer than this is not waited out: the caller gets RateLimited and decides.
MAX_RETRY_AFTER = 30.0


class ApiError(SluiceError):
    """An answer with an error code that has no class of its own (400, 405, 413, 500, ...)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.status = status
        self.code = code


class WaitTimeout(SluiceError, TimeoutError):
    """``wait()`` ran out of time before the job finished; ``job`` is its last known state."""

    code = "timeout"

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How one HTTP exchange went: an answer (status, body), or a transport failure."""

    status: int | None
    body: Any = None
    headers: Mapping[str, str] | None = None
    failure: str | None = None
    # The request surely never reached the server (connection refused): always safe to repeat.
    unsent: bool = False


class SluiceClient:
    """``retries``: further attempts after the first on transient failures (0 turns retrying off)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        retries: int = 3,
        *,
        retry_delay: float = 0.5,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = max(0, retries)
        self.retry_delay = retry_delay

    # -- jobs --------------------------------------------------------------------------------------

    def enqueue(self, spec: JobSpec | Mapping[str, Any] | None = None, /, **fields: Any) -> Job:
        """``enqueue(JobSpec(...))``, ``enqueue({"type": ...})`` or ``enqueue(type=..., payload=...)``."""
        body = _wire_spec(spec if spec is not None else fields)
        return Job.model_validate(self._call("POST", "/api/jobs", body=body, repeatable=True))

    def enqueue_many(self, specs: Iterable[JobSpec | Mapping[str, Any]]) -> list[Job]:
        """All or nothing, 1..1000 jobs in one request."""
        body = {"jobs": [_wire_spec(spec) for spec in specs]}
        answer = self._call("POST", "/api/jobs/batch", body=body, repeatable=True)
        return [Job.model_validate(item) for item in answer["jobs"]]

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._call("GET", f"/api/jobs/{_segment(job_id)}"))

    def cancel(self, job_id: str) -> Job:
        # Not repeated after an ambiguous failure: a second cancel of a cancelled job is a 409.
        return Job.model_validate(self._call("POST", f"/api/jobs/{_segment(job_id)}/cancel"))

    def retry(self, job_id: str) -> Job:
        return Job.model_validate(self._call("POST", f"/api/jobs/{_segment(job_id)}/retry"))

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's attempts, oldest first: outcome, error and the handler's traceback of each."""
        answer = self._call("GET", f"/api/jobs/{_segment(job_id)}/attempts")
        attempts: list[dict[str, Any]] = answer["attempts"]
        return attempts

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        """The durable steps the job finished, in order: name, finishedAt, resultBytes."""
        answer = self._call("GET", f"/api/jobs/{_segment(job_id)}/attempts")
        steps: list[dict[str, Any]] = answer.get("steps", [])  # [] from a server without steps
        return steps

    def retry_many(self, **filters: Any) -> BulkResult:
        """Retry failed/cancelled jobs by filter: ``retry_many(type="email", status="failed",
        dry_run=True)``; names as in BulkRequest (ids, status, type, tenant_id, created_before,
        dry_run, limit)."""
        return self._bulk("retry", filters)

    def cancel_many(self, **filters: Any) -> BulkResult:
        """Cancel pending jobs by filter (as retry_many)."""
        return self._bulk("cancel", filters)

    def _bulk(self, verb: str, filters: Mapping[str, Any]) -> BulkResult:
        try:
            request = BulkRequest.model_validate(dict(filters), strict=False)
        except pydantic.ValidationError as exc:
            raise invalid(exc, f"the {verb} filters are not valid") from None
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        # Not repeated after an ambiguous failure; a repeat would change nothing more anyway.
        return BulkResult.model_validate(self._call("POST", f"/api/jobs/{verb}", body=body))

    def status(self) -> QueueStatus:
        return QueueStatus.model_validate(self._call("GET", "/api/jobs/status"))

    def process(
        self, max_jobs: int | None = None, budget_ms: int | None = None, *, timeout: float | None = None
    ) -> DrainSummary:
        """Drain now. Waits for the drain's budget plus ``self.timeout`` unless ``timeout`` is given."""
        query = {"maxJobs": max_jobs, "budgetMs": budget_ms}
        wait = timeout if timeout is not None else (budget_ms or 25_000) / 1000 + self.timeout
        # A repeated drain is harmless: each attempt runs at most once (fenced claims).
        answer = self._call("POST", "/api/jobs/process", query=query, repeatable=True, timeout=wait)
        return DrainSummary.model_validate(answer)

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.5) -> Job:
        """Poll until the job is completed, failed or cancelled; WaitTimeout when time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.status in FINISHED_STATUSES:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job)
            time.sleep(min(poll, left))

    def list(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page, newest first; pass ``page.next_cursor`` as ``cursor`` for the next one."""
        query = {"status": status, "type": type, "tenantId": tenant_id, "limit": limit, "cursor": cursor}
        return JobPage.model_validate(self._call("GET", "/api/jobs", query=query))

    # -- transport ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        repeatable: bool | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The answer's JSON, or the SluiceError its error code names. ``repeatable``: may be sent
        again after a failure that leaves unknown whether it arrived (default: GET only)."""
        repeatable = method == "GET" if repeatable is None else repeatable
        url = self.base_url + path
        params = {key: value for key, value in (query or {}).items() if value is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        attempt = 0
        while True:
            result = self._send(method, url, data, timeout or self.timeout)
            last = attempt >= self.retries
            if result.status is not None and 200 <= result.status < 300:
                return result.body
            if result.status is None:
                if last or not (repeatable or result.unsent):
                    raise Unavailable(f"{method} {path}: {result.failure}")
                self._pause(attempt, None)
                attempt += 1
                continue
            error = _error(result)
            if last or result.status not in TRANSIENT_STATUSES or error.code == "not_configured":
                raise error
            retry_after = _retry_after(result.headers)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                raise error
            self._pause(attempt, retry_after)
            attempt += 1

    def _send(self, method: str, url: str, data: bytes | None, timeout: float) -> _Attempt:
        headers = {"x-api-key": self.api_key, "Accept": "application/json", "User-Agent": "sluice-client"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return _Attempt(response.status, _json(response.read()), dict(response.headers))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Attempt(exc.code, _json(exc.read()), dict(exc.headers or {}))
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            return _Attempt(None, failure=f"cannot reach {self.base_url}: {exc.reason}", unsent=refused)
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            return _Attempt(None, failure=f"no answer from {self.base_url}: {type(exc).__name__} {exc}")

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        """Retry-After when the server gave one, else exponential backoff with full jitter."""
        if retry_after is None:
            retry_after = random.uniform(0, self.retry_delay * 2**attempt)
        time.sleep(retry_after)


def _wire_spec(spec: JobSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The enqueue body, validated here as the server will, with an idempotencyKey always set."""
    if not isinstance(spec, JobSpec):
        try:
            spec = JobSpec.model_validate(dict(spec))
        except pydantic.ValidationError as exc:
            raise invalid(exc, "the job is not valid") from None
    if spec.idempotency_key is None:
        spec = spec.model_copy(update={"idempotency_key": str(uuid.uuid4())})
    body: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def _segment(job_id: str) -> str:
    return urllib.parse.quote(str(job_id), safe="")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", errors="replace")[:500]


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = {k.lower(): v for k, v in (headers or {}).items()}.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error(result: _Attempt) -> SluiceError:
    """The exception an error answer names; gateways' non-JSON 502/503/504 count as Unavailable."""
    status = result.status or 0
    info = result.body.get("error") if isinstance(result.body, dict) else None
    if not isinstance(info, dict):
        if status in TRANSIENT_STATUSES - {429}:
            return Unavailable(f"HTTP {status} from the server or its gateway")
        return ApiError(status, f"http_{status}", f"HTTP {status}: {str(result.body)[:200]}")
    code = str(info.get("code", f"http_{status}"))
    message = str(info.get("message", f"HTTP {status}"))
    details = info.get("details")
    if code == "rate_limited":
        return RateLimited(message, round(_retry_after(result.headers) or 1))
    cls = ERRORS.get(code)
    if cls is None:
        return ApiError(status, code, message, details)
    return cls(message, details)
