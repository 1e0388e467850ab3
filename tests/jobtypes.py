"""Job types the tests use; imported through JOBS_HANDLER_MODULES, in child processes too."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import urllib.request
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
    """Appends '<job id> <attempt> <pid>' to a file: the proof of how often each job ran; then
    takes ``seconds`` (default 0) to finish."""
    with open(payload["file"], "a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    time.sleep(float(payload.get("seconds", 0)))
    return {"pid": os.getpid()}


async def _cancelled() -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_soon(task.cancel)
    await asyncio.sleep(10)


@job("test.base_exception")
def base_exception(payload: dict[str, Any]) -> Any:
    """Raises what is not an Exception: SystemExit, KeyboardInterrupt, or (an async handler) a
    cancelled task's CancelledError."""
    kind = payload["kind"]
    if kind == "exit":
        sys.exit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    return _cancelled()


@job("test.unserialisable")
def unserialisable(payload: dict[str, Any]) -> object:
    return object()


@job("test.block", timeout=2)
def block(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Records '<job id> <attempt> <pid>' like test.record, then hangs on the first
    ``blockAttempts`` attempts (default 1): a worker to SIGKILL mid-job."""
    with open(payload["file"], "a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    if ctx.attempt <= int(payload.get("blockAttempts", 1)):
        time.sleep(3600)
    return {"attempt": ctx.attempt}


# Gates a test opens from another thread: test.gate waits on GATES[payload["gate"]].
GATES: dict[str, threading.Event] = {}


@job("test.gate", timeout=60)
def gate(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """On attempt 1, waits (≤ 10 s) until the test opens its gate; later attempts return at once."""
    if ctx.attempt == 1:
        GATES[payload["gate"]].wait(10)
    return {"attempt": ctx.attempt}


@job("test.odd", max_attempts=3)
def odd(payload: dict[str, Any]) -> Any:
    """Outcomes a database can't store as given: one must not sink the rest of its batch."""
    kind = payload["kind"]
    if kind == "retry-forever":
        raise RetryLater("much later", float("inf"))
    if kind == "retry-far":
        raise RetryLater("much later", 1e20)
    if kind == "nul-result":
        return {"text": "a\x00b"}
    if kind == "surrogate-result":
        return "x\ud800"
    if kind == "nul-error":
        raise RuntimeError("bad\x00byte")
    raise RuntimeError("x\udc80")  # "surrogate-error"


def terminate_backends(database_url: str, application_name: str = "sluice") -> int:
    """From a connection of its own, ends every other backend of this PostgreSQL database whose
    application_name matches (the app's engines use "sluice"): what a server restart, a
    failover or an idle-connection killer does to the app. Returns how many were ended."""
    import psycopg
    import sqlalchemy as sa

    from lib.db import normalize_url

    url = sa.engine.make_url(normalize_url(database_url)).set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, application_name="sluice-test-killer") as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = %s",
            (application_name,),
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)


@job("test.pg_terminate", max_attempts=3, timeout=5)
def pg_terminate(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """On attempt 1, terminates the drain's own database connections mid-batch (see
    terminate_backends); later attempts just succeed."""
    ended = terminate_backends(ctx.settings.database_url) if ctx.attempt == 1 else 0
    return {"attempt": ctx.attempt, "ended": ended}


class Card(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card: str
    token: str | None = None
    note: str = ""


# What test.sensitive's handler received, in order (same process only).
SENSITIVE_SEEN: list[dict[str, Any]] = []


@job("test.sensitive", payload=Card, sensitive=("card", "token"))
def sensitive(payload: Card) -> dict[str, Any]:
    """Its card and token are encrypted at rest; the handler sees them in plain text."""
    SENSITIVE_SEEN.append(payload.model_dump())
    return {"cardLength": len(payload.card)}


@job("test.internal", internal=True)
def internal(payload: dict[str, Any]) -> None:
    """A type the app marks internal: Sluice may create it, HTTP callers may not."""


def _check_length(length: int) -> None:
    raise ValueError(f"length {length} is not allowed")


@job("test.explode", max_attempts=2)
def explode(payload: dict[str, Any]) -> None:
    """Fails two frames deep with a payload value in a local variable (never in the traceback)."""
    secret = payload["secret"]
    _check_length(len(secret))


def _step_run(log: str, job_id: str, name: str, fail: bool = False) -> Any:
    """A step's body: appends '<job id> <step>' to ``log`` (one line per execution)."""

    def body() -> Any:
        with open(log, "a") as fh:
            fh.write(f"{job_id} {name}\n")
        if fail:
            raise RuntimeError(f"{name} failed")
        return {"step": name, "at": [1, 2]}

    return body


def _pause(path: str) -> None:
    """Once per job: create '<path>.ready' (holding this pid), then wait for '<path>.go'."""
    ready = f"{path}.ready"
    if os.path.exists(ready):
        return
    with open(ready, "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not os.path.exists(f"{path}.go") and time.monotonic() < deadline:
        time.sleep(0.01)


@job("test.steps", max_attempts=1, timeout=10)
def three_steps(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Steps one, two, three, each logging its executions to payload["file"]. Options:
    "pause" (after step one, once: signal and wait), "sleep" (ctx.sleep after step two),
    "failTwo" (step two raises until the file payload["fixed"] exists)."""
    log, job_id = payload["file"], ctx.job_id
    one = ctx.step("one", _step_run(log, job_id, "one"))
    if "pause" in payload:
        _pause(payload["pause"])
    fail = "failTwo" in payload and not os.path.exists(payload["failTwo"])
    two = ctx.step("two", _step_run(log, job_id, "two", fail))
    if "sleep" in payload:
        ctx.sleep(payload["sleep"])
    three = ctx.step("three", _step_run(log, job_id, "three"))
    return {"one": one, "two": two, "three": three}


@job("test.bad_steps", max_attempts=3)
def bad_steps(payload: dict[str, Any], ctx: JobContext) -> Any:
    """Misuses steps as payload["how"] says: "twice" (a name used twice), "unjson" (a result
    that isn't JSON), "name" (a name outside the alphabet)."""
    how = payload["how"]
    if how == "twice":
        ctx.step("a", lambda: 1)
        ctx.step("a", lambda: 2)
    if how == "unjson":
        ctx.step("a", object)
    if how == "name":
        ctx.step('say "hi"', lambda: 1)
    return None


@job("test.long_steps", max_attempts=1, timeout=2)
def long_steps(payload: dict[str, Any], ctx: JobContext) -> int:
    """Six 0.5 s steps (3 s in all) under a 2 s timeout: a named sleep(0) after every second step
    continues the job in a fresh attempt, so no attempt runs past its timeout."""
    log, job_id = payload["file"], ctx.job_id
    for i in range(6):

        def body(i: int = i) -> int:
            time.sleep(0.5)
            with open(log, "a") as fh:
                fh.write(f"{job_id} part-{i}\n")
            return i

        ctx.step(f"part-{i}", body)
        if i in (1, 3):
            ctx.sleep(0, name=f"pause-{i}")
    return 6


@job("test.visit", timeout=30)
def visit(payload: dict[str, Any], ctx: JobContext) -> None:
    """Records the run like test.record, then calls a loopback receiver (``url``) that counts
    requests in flight per ``key``."""
    with open(payload["file"], "a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    with urllib.request.urlopen(f"{payload['url']}?key={payload['key']}", timeout=20) as answer:
        answer.read()
