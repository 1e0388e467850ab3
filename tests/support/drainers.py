"""Drain processes started together, and what their handlers recorded."""

from __future__ import annotations

import contextlib
import queue as queue_module
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests import workers


def run_drainers(
    url: str, processes: int, overrides: dict[str, Any], context: Any = workers.SPAWN
) -> list[tuple[int, int, int]]:
    """Start ``processes`` drainers together (a barrier), wait, return (pid, processed, drains)."""
    start = context.Barrier(processes)
    results = context.Queue()
    procs = [
        workers.start(workers.drain_until_empty, url, overrides, start, results, context=context)
        for _ in range(processes)
    ]
    reports: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + 90
    try:
        while len(reports) < processes:
            # Fail at once if a drainer died instead of waiting out the deadline.
            assert not [p.exitcode for p in procs if p.exitcode not in (None, 0)], "a drainer crashed"
            assert time.monotonic() < deadline, f"only {len(reports)} of {processes} drainers finished"
            with contextlib.suppress(queue_module.Empty):
                reports.append(results.get(timeout=0.2))
        for proc in procs:
            proc.join(10)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    return reports


def runs_per_job(path: Path) -> Counter[str]:
    """Lines of the record file per job id (the handler writes '<id> <attempt> <pid>')."""
    lines = path.read_text().splitlines()
    assert all(len(line.split()) == 3 for line in lines), "torn or interleaved write"
    return Counter(line.split()[0] for line in lines)
