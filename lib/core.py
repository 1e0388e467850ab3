"""What the facade builds once and hands to the services it owns: the engine (and its single and
reader views), the settings and the job type registry, and the step every enqueue takes first
(a spec, validated against its type, as the row to insert). Features get these from here, never
from the facade, so they sit below it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from .config import Settings
from .crypto import seal
from .db import reader
from .errors import Forbidden, ValidationError
from .jsontext import storable_json
from .models import JobSpec
from .registry import Registry
from .store.jobs import HELD_RUN_AT, NewJob, new_id


@dataclass(eq=False)
class Core:
    engine: sa.Engine
    # Not frozen: a test (or an operator's script) may swap the settings of a live queue.
    settings: Settings
    registry: Registry

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @functools.cached_property
    def single(self) -> sa.Engine:
        """For one-statement writes (reads use ``reader``): autocommit on PostgreSQL, which saves the
        BEGIN and COMMIT round trips (half of a single enqueue's). SQLite keeps its transactions:
        its BEGIN IMMEDIATE is what serialises writers."""
        if self.dialect == "postgresql":
            return self.engine.execution_options(isolation_level="AUTOCOMMIT")
        return self.engine

    @functools.cached_property
    def reader(self) -> sa.Engine:
        """For reads only (get, list, status, metrics): on SQLite they take no write lock."""
        return reader(self.engine)

    def prepare(self, spec: JobSpec, tenant: str | None = None, job_id: uuid.UUID | None = None) -> NewJob:
        """Validate a spec against its type; ``tenant`` is the acting tenant of a scoped key."""
        if tenant is not None and spec.tenant_id not in (None, tenant):
            raise Forbidden("a tenant key may only enqueue for its own tenant")
        job_type = self.registry.get(spec.type)
        payload = job_type.validate_payload(spec.payload, self.settings)
        if job_type.sensitive:
            payload = seal(payload, job_type.sensitive, self.settings)
        try:
            payload_json = storable_json(payload)
        except (TypeError, ValueError) as exc:
            raise ValidationError("payload cannot be stored", [{"loc": "payload", "msg": str(exc)}]) from None
        backoff = spec.backoff.policy() if spec.backoff else job_type.backoff
        job_id = job_id or new_id()
        job_id_text = str(job_id)
        return NewJob(
            id=job_id,
            id_text=job_id_text,
            type=spec.type,
            payload=payload,
            payload_json=payload_json,
            priority=spec.priority,
            max_attempts=spec.max_attempts or job_type.max_attempts,
            timeout_seconds=spec.timeout_seconds or job_type.timeout_seconds,
            backoff_strategy=backoff.strategy,
            backoff_delay=backoff.delay_seconds,
            backoff_max=backoff.max_delay_seconds,
            # Held until the jobs it names complete (lib/flow.py releases it).
            run_at=HELD_RUN_AT if spec.after is not None else spec.run_at,
            delay_seconds=float(spec.delay_seconds or 0),
            tenant_id=tenant or spec.tenant_id,
            # A job that starts a chain correlates with itself: unique, and no second UUID to make.
            correlation_id=spec.correlation_id or job_id_text,
            idempotency_key=spec.idempotency_key,
            concurrency_key=spec.concurrency_key,
            concurrency_limit=(spec.concurrency_limit or 1) if spec.concurrency_key is not None else None,
            debounce_key=spec.debounce.key if spec.debounce is not None else None,
            debounce_seconds=spec.debounce.seconds if spec.debounce is not None else 0,
            after_ids=after_ids(spec.after),
            callback_url=self.checked_callback_url(spec.callback_url),
        )

    def checked_callback_url(self, url: str | None) -> str | None:
        """The URL rules of an ``http`` job (scheme, host name, SSRF checks of an IP literal), at
        enqueue, through the registered ``http`` type; its addresses are checked again at every
        delivery."""
        if url is None:
            return None
        try:
            self.registry.get("http").validate_payload({"url": url}, self.settings)
        except ValidationError as exc:
            details = exc.details if isinstance(exc.details, list) else []
            msg = "; ".join(str(item.get("msg", "")) for item in details) or exc.message
            raise ValidationError("callbackUrl is not valid", [{"loc": "callbackUrl", "msg": msg}]) from None
        return url


def after_ids(given: Sequence[str] | None) -> list[str] | None:
    """The ids an ``after`` names, in canonical form; 422 for one that is not a job id."""
    if given is None:
        return None
    ids: list[str] = []
    for index, text in enumerate(given):
        try:
            ids.append(str(uuid.UUID(text)))
        except ValueError:
            raise ValidationError(
                "after names something that is not a job id",
                [{"loc": f"after.{index}", "msg": "not a job id"}],
            ) from None
    return list(dict.fromkeys(ids))


class Service:
    """A feature the facade owns (``queue.schedules``, ``queue.retention``, …): built over the Core,
    it reads the queue's current settings through it."""

    def __init__(self, core: Core) -> None:
        self.core = core

    @property
    def settings(self) -> Settings:
        return self.core.settings
