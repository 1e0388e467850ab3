"""Entry points for child processes (multiprocessing "spawn"): each builds its own Queue from
the URL, as a separate serverless invocation would, and loads the test job types by name."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from multiprocessing.synchronize import Barrier
from typing import Any

from lib import Queue

TEST_HANDLERS = "tests.jobtypes"
SPAWN = mp.get_context("spawn")
# For many drainers: children fork from a server that imported the library once, so sixteen
# start in well under a second instead of paying sixteen imports on two cores. The server never
# opens a connection, so each child still builds its own engine after the fork.
FORKSERVER = mp.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["lib", "tests.jobtypes", "tests.workers"])


def _queue(url: str, overrides: dict[str, Any]) -> Queue:
    queue = Queue.from_url(url, jobs_handler_modules=TEST_HANDLERS, **overrides)
    # Connect before the barrier, so start-up cost doesn't decide who gets the jobs.
    assert queue.ping()
    return queue


def drain_until_empty(url: str, overrides: dict[str, Any], start: Barrier, results: Any) -> None:
    """Drain until a drain finds nothing; report (pid, jobs processed, drains run)."""
    queue = _queue(url, overrides)
    start.wait(60)
    processed = drains = 0
    while True:
        summary = queue.drain(max_jobs=100_000, budget_ms=120_000)
        drains += 1
        processed += summary.processed
        if summary.processed == 0:
            break
    queue.engine.dispose()
    results.put((os.getpid(), processed, drains))


def drain_once(url: str, overrides: dict[str, Any], max_jobs: int) -> None:
    """One drain; the crash tests SIGKILL this process while its handler runs."""
    _queue(url, overrides).drain(max_jobs=max_jobs, budget_ms=60_000)


def drain_for(url: str, overrides: dict[str, Any], seconds: float, max_jobs: int) -> None:
    """Drain again and again for ``seconds``: other cron pings, kicks and fan-out calls."""
    queue = _queue(url, overrides)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        queue.drain(max_jobs=max_jobs, budget_ms=1000)
        time.sleep(0.05)
    queue.engine.dispose()


def start(target: Any, *args: Any, context: Any = SPAWN) -> mp.process.BaseProcess:
    proc: mp.process.BaseProcess = context.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc
