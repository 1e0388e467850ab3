"""Scale out within one cron tick: a drain that finds more backlog than it can finish asks its own
endpoint for N-1 more drains, so many function instances clear the backlog at once.

One level only: the extra calls carry FANOUT_HEADER and never fan out again. Overlap is safe for
the same reason overlapping cron pings are (SKIP LOCKED claims, fenced writes).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .models import DrainSummary

FANOUT_HEADER = "Sluice-Fan-Out"
MAX_FANOUT = 16


def extra_calls(fan_out: int, backlog: int, max_jobs: int) -> int:
    """How many more drains are worth starting: none unless the backlog exceeds one drain."""
    if fan_out <= 1 or backlog <= max_jobs:
        return 0
    return min(fan_out, MAX_FANOUT, math.ceil(backlog / max_jobs)) - 1


@dataclass
class FanOut:
    """Parallel POSTs to ``url`` with the caller's credential headers, started in threads."""

    url: str
    headers: Mapping[str, str]
    timeout: float
    results: list[DrainSummary] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, calls: int) -> FanOut:
        for _ in range(calls):
            thread = threading.Thread(target=self._call, name="sluice-fanout", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wait(self) -> FanOut:
        for thread in self._threads:
            thread.join(self.timeout)
        return self

    def _call(self) -> None:
        import urllib.error  # lazy: urllib.request loads email and more; only a fan-out pays
        import urllib.request  # lazy: as urllib.error

        request = urllib.request.Request(  # noqa: S310 - our own endpoint, http(s) only
            self.url, method="POST", data=b"", headers={**self.headers, FANOUT_HEADER: "1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                summary = DrainSummary.model_validate(json.loads(response.read()))
            with self._lock:
                self.results.append(summary)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def merge(own: DrainSummary, others: Sequence[DrainSummary], duration_ms: int) -> DrainSummary:
    """One summary for the whole tick: counts add up; remaining is the smallest seen."""
    every = [own, *others]
    return DrainSummary(
        processed=sum(s.processed for s in every),
        succeeded=sum(s.succeeded for s in every),
        retried=sum(s.retried for s in every),
        failed=sum(s.failed for s in every),
        duration_ms=duration_ms,
        remaining=min(s.remaining for s in every),
        stopped_by=own.stopped_by,
    )
