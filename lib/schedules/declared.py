"""Schedules declared in code, next to their job type (``schedule(...)`` in a handler module):
one process-wide set, like the job type registry, that each Queue's first drain writes to the
table (lib/schedules/service.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict
from .models import ScheduleSpec, check_name


@dataclass
class Declarations:
    """Schedules by name; declaring one twice with different settings fails loudly."""

    _specs: dict[str, ScheduleSpec] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, spec: ScheduleSpec) -> ScheduleSpec:
        with self._lock:
            if self._specs.get(name, spec) != spec:
                raise Conflict(f"schedule {name!r} is declared twice with different settings")
            self._specs[name] = spec
        return spec

    def all(self) -> dict[str, ScheduleSpec]:
        with self._lock:
            return dict(self._specs)

    def remove(self, name: str) -> None:
        with self._lock:
            self._specs.pop(name, None)


# The process-wide declarations that ``schedule()`` writes to (as ``@job`` writes to lib.registry).
declarations = Declarations()


def schedule(
    name: str,
    cron: str,
    type: str,
    *,
    payload: dict[str, Any] | None = None,
    timezone: str = "UTC",
    enabled: bool = True,
    catch_up: bool = False,
    **options: Any,
) -> ScheduleSpec:
    """Declare a schedule next to its job type, e.g. in a JOBS_HANDLER_MODULES module:

    ``schedule("chat-cleanup", "0 2 * * *", "cleanup.chat", timezone="UTC")``

    Each Queue writes the declared schedules to the table on its first drain (``Schedules.sync_declared``),
    keeping their lastRunAt and, while cron, timezone and enabled are unchanged, their nextRunAt.
    ``options`` are job options: priority, max_attempts, timeout_seconds, backoff, tenant_id.
    """
    check_name(name)
    spec = ScheduleSpec.model_validate(
        {
            "cron": cron,
            "type": type,
            "payload": payload or {},
            "timezone": timezone,
            "enabled": enabled,
            "catch_up": catch_up,
            **options,
        },
        strict=False,
    )
    return declarations.add(name, spec)


def declared() -> dict[str, ScheduleSpec]:
    return declarations.all()


def undeclare(name: str) -> None:
    """Forget a code declaration (the stored schedule stays; delete it through the API)."""
    declarations.remove(name)
