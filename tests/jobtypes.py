"""Job types the tests use; imported through JOBS_HANDLER_MODULES, in child processes too."""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from lib import JobContext, PermanentError, RetryLater, job


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    times: int = 1


@job("test.greet", payload=Greeting, max_attempts=2, timeout=30)
def greet(payload: Greeting, ctx: JobContext) -> dict[str, Any]:
    ctx.progress(50, "halfway")
    return {"greeting": f"hello {payload.name}" * payload.times, "attempt": ctx.attempt}


@job("test.fail")
def always_fail(payload: dict[str, Any]) -> None:
    raise RuntimeError("boom")


@job("test.permanent")
def permanent(payload: dict[str, Any]) -> None:
    raise PermanentError("bad input, don't retry")


@job("test.later")
def later(payload: dict[str, Any]) -> None:
    raise RetryLater("not yet", float(payload.get("seconds", 60)))


@job("test.sleep", timeout=5)
def sleep(payload: dict[str, Any]) -> str:
    time.sleep(float(payload["seconds"]))
    return "slept"


@job("test.record")
def record(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Appends '<job id> <attempt> <pid>' to a file: the proof of how often each job ran."""
    with open(payload["file"], "a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    return {"pid": os.getpid()}


@job("test.unserialisable")
def unserialisable(payload: dict[str, Any]) -> object:
    return object()
