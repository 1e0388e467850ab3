"""The drain's watchdog keeps each job to its own timeout, whatever ran before it in the batch.

Regression: the watchdog used to sleep until the *previous* job's deadline (join(wait)), so a hung
job that followed a quick job with a long timeout ran on past its own timeout and lease, where
another drain could reclaim it and run it a second time."""

from __future__ import annotations

import time

from lib import Queue


def test_a_short_timeout_after_a_long_one_is_still_enforced(queue: Queue) -> None:
    quick = queue.enqueue("test.greet", {"name": "a"}, priority=1, timeout_seconds=60)
    hung = queue.enqueue("test.sleep", {"seconds": 3}, timeout_seconds=1, max_attempts=1)
    started = time.monotonic()
    summary = queue.drain(max_jobs=10)
    elapsed = time.monotonic() - started
    assert (summary.processed, summary.succeeded, summary.failed) == (2, 1, 1)
    assert queue.get(quick.id).status == "completed"
    dead = queue.get(hung.id)
    assert (dead.status, dead.last_error) == ("failed", "timed out after 1s")
    assert elapsed < 2.5, f"the hung job was given up on after {elapsed:.1f}s, not at its 1 s timeout"
