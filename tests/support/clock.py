"""A clock a test moves by hand, for what a drain measures its time budget on (Drainer.clock)."""

from __future__ import annotations

import threading


class FakeClock:
    """Monotonic seconds that pass only when ``advance`` is called (from any thread)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds
