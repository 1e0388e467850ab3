"""Backoff policies: how long a failed attempt waits before the next one.

Only the delay is computed here; the store adds it to the database clock (``now()``), so app
servers with skewed clocks agree on when a job is due.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["exponential", "fixed", "linear"]
STRATEGIES: tuple[Strategy, ...] = ("exponential", "fixed", "linear")


@dataclass(frozen=True, slots=True)
class Backoff:
    strategy: Strategy = "exponential"
    delay_seconds: int = 10
    max_delay_seconds: int = 3600

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based)."""
        attempt = max(1, attempt)
        if self.strategy == "fixed":
            raw = float(self.delay_seconds)
        elif self.strategy == "linear":
            raw = float(self.delay_seconds * attempt)
        else:
            # Cap the exponent so huge attempt counts cannot overflow a float.
            raw = self.delay_seconds * 2.0 ** min(attempt - 1, 62)
        return min(raw, float(self.max_delay_seconds))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``: full jitter for exponential."""
        ceiling = self.ceiling(attempt)
        if self.strategy != "exponential":
            return ceiling
        return (rng or random).uniform(0.0, ceiling)


DEFAULT_BACKOFF = Backoff()
