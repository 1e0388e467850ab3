"""Job types: a name, a handler, a payload model and defaults. One registry; duplicates fail loudly."""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from .config import Settings, get_settings
from .crypto import unseal
from .errors import ConfigError, DuplicateJobType, UnknownJobType, ValidationError
from .rates import Rate, parse_key, parse_rate
from .retry import DEFAULT_BACKOFF, Backoff

if TYPE_CHECKING:
    from .context import JobContext

Handler = Callable[..., Any]
Check = Callable[[dict[str, Any], Settings], None]

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_SECONDS = 60
# Job types under these prefixes belong to Sluice: only Sluice itself creates them.
INTERNAL_PREFIXES = ("sluice.", "alert.")
BUILTIN_HANDLER_MODULES = (
    "lib.handlers.noop",
    "lib.handlers.http",
    "lib.handlers.email_ses",
    "lib.handlers.alerts",
)


@dataclass(frozen=True, slots=True)
class JobType:
    name: str
    handler: Handler
    payload_model: type[pydantic.BaseModel] | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    backoff: Backoff = DEFAULT_BACKOFF
    # Handlers may take (payload) or (payload, ctx); decided once, not per job.
    wants_context: bool = True
    # Called at enqueue with the validated payload and the queue's settings, for checks a model
    # can't express (e.g. SSRF).
    check: Check | None = None
    # Runs per window, per value of the payload path rate_key (None: the whole type); lib/ratelimit.py.
    rate_limit: Rate | None = None
    rate_key: tuple[str, ...] | None = None
    # Top-level payload fields encrypted at rest (lib/crypto.py), decrypted only for the handler.
    sensitive: tuple[str, ...] = ()
    # Made by Sluice itself only (digests, ...): never enqueueable over HTTP.
    internal: bool = False

    def validate_payload(
        self, payload: dict[str, Any], settings: Settings | None = None
    ) -> dict[str, Any]:
        """The payload as it will be stored, or ValidationError naming the bad fields."""
        if self.payload_model is not None:
            try:
                model = self.payload_model.model_validate(payload)
            except pydantic.ValidationError as exc:
                raise ValidationError(
                    f"payload is not valid for job type {self.name!r}", payload_errors(exc)
                ) from None
            payload = model.model_dump(mode="json")
        if self.check is not None:
            self.check(payload, settings or get_settings())
        return payload

    def run(self, payload: Any, ctx: JobContext | None, settings: Settings | None = None) -> Any:
        """Call the handler; ``settings`` (the drain's) hold the keys of sensitive fields."""
        if self.sensitive:
            payload = unseal(payload, self.sensitive, settings or get_settings())
        if self.payload_model is not None:
            payload = self.payload_model.model_validate(payload)
        return self.handler(payload, ctx) if self.wants_context else self.handler(payload)


def payload_errors(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(["payload", *(str(p) for p in err["loc"])]), "msg": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


@dataclass
class Registry:
    """Job types by name. ``load()`` imports the built-in and configured handler modules once."""

    _types: dict[str, JobType] = field(default_factory=dict)
    _loaded: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, job_type: JobType) -> JobType:
        existing = self._types.get(job_type.name)
        if existing is not None:
            raise DuplicateJobType(
                f"job type {job_type.name!r} is already registered by "
                f"{existing.handler.__module__}.{existing.handler.__qualname__}"
            )
        self._types[job_type.name] = job_type
        return job_type

    def job(
        self,
        name: str,
        *,
        payload: type[pydantic.BaseModel] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: int = DEFAULT_TIMEOUT_SECONDS,
        backoff: Backoff = DEFAULT_BACKOFF,
        check: Check | None = None,
        rate_limit: str | Rate | None = None,
        rate_key: str | None = None,
        sensitive: Iterable[str] = (),
        internal: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator: ``@job("email.send", payload=Model, max_attempts=5)``; ``rate_limit="50/hour",
        rate_key="payload.userId"`` caps how often jobs with the same key start;
        ``sensitive=("card",)`` encrypts those top-level payload fields at rest (JOBS_ENCRYPTION_KEYS)."""
        rate = parse_rate(rate_limit) if rate_limit is not None else None
        key = parse_key(rate_key)
        secret = (sensitive,) if isinstance(sensitive, str) else tuple(sensitive)
        unknown = [f for f in secret if payload is not None and f not in payload.model_fields]
        if unknown:
            raise ValueError(f"job type {name!r}: sensitive fields {unknown} are not fields of its payload")

        def register(handler: Handler) -> Handler:
            params = inspect.signature(handler).parameters
            self.add(
                JobType(
                    name,
                    handler,
                    payload,
                    max_attempts,
                    timeout,
                    backoff,
                    len(params) >= 2,
                    check,
                    rate,
                    key,
                    secret,
                    internal,
                )
            )
            return handler

        return register

    def load(self, modules: Iterable[str] = ()) -> Registry:
        """Import handler modules (built-ins first) so their decorators register; idempotent."""
        with self._lock:
            for module in (*BUILTIN_HANDLER_MODULES, *modules):
                if module not in self._loaded:
                    _import_handlers(module)
                    self._loaded.add(module)
        return self

    def get(self, name: str) -> JobType:
        job_type = self._types.get(name)
        if job_type is None:
            raise UnknownJobType(
                f"unknown job type {name!r}", [{"loc": "type", "msg": f"{name!r} is not registered"}]
            )
        return job_type

    def is_internal(self, name: str) -> bool:
        """A type only Sluice creates: a reserved prefix, or registered ``internal=True``."""
        found = self._types.get(name)
        return name.startswith(INTERNAL_PREFIXES) or (found is not None and found.internal)

    def public(self, name: str) -> JobType:
        """``get`` for callers outside Sluice (the HTTP API): internal types are refused."""
        if self.is_internal(name):
            raise ValidationError(
                f"job type {name!r} is internal to Sluice and cannot be enqueued",
                [{"loc": "type", "msg": "internal job types (sluice.*, alert.*) are created by Sluice only"}],
            )
        return self.get(name)

    def find(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[JobType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))


def _import_handlers(module: str) -> None:
    """Import one handler module; any failure is a configuration problem naming the setting."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a module can fail to import with anything: report all alike
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        setting = "a built-in handler module" if module in BUILTIN_HANDLER_MODULES else "JOBS_HANDLER_MODULES"
        raise ConfigError(f"{setting}: module {module!r} does not import ({reason})") from exc


# The process-wide registry that ``@lib.job`` writes to.
registry = Registry()
job = registry.job
