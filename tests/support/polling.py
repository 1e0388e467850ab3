"""Waiting for a condition another thread or process brings about."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object], seconds: float = 30, what: str = "condition", interval: float = 0.02
) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``seconds``. The bound only
    guards against a hang: nothing asserted depends on how long the wait took."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
