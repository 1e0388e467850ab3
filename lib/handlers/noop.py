"""``noop``: does nothing, for smoke tests and benchmarks."""

from __future__ import annotations

from typing import Any

from ..registry import job


@job("noop")
def noop(payload: dict[str, Any]) -> None:
    return None
