"""Durable steps: ``ctx.step(name, fn)`` runs ``fn`` once per job and keeps its JSON result on the
job; ``ctx.sleep(seconds)`` ends the attempt uncounted and makes the job due again later, its steps
kept. A handler is replayed from the top on every attempt or continuation: finished steps return
their stored result instead of running again.

Every step write is fenced on the claim (id + token + processing): a refused write means another
drain holds the job now, so the handler is stopped (LeaseLost) and nothing is recorded.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from .errors import LeaseLost, Sleeping, StepError
from .jsontext import storable_json
from .models import StepInfo

T = TypeVar("T")

# Names are kept as keys of a JSON object and quoted in SQLite JSON paths: a plain alphabet.
STEP_NAME = re.compile(r"[A-Za-z0-9 ._:@/-]{1,100}")
STEP_NAME_RULE = "1..100 characters of A-Z a-z 0-9 space . _ : @ / -"
# A replayed sleep this close to its wake time is over (the database's clock woke the job; this
# process's clock may differ a little).
WAKE_SLACK_SECONDS = 1.0
LOST = "the job's lease was taken over by another drain: this attempt stops, nothing is recorded"

# A step's stored result, at most (each step write rewrites the job's steps: keep them small).
MAX_RESULT_BYTES = 1 << 20

# (claim token, job id, step name, entry JSON text) → stored; (claim token, job id) → the job's
# steps (None: the job is no longer this claim's).
StepWrite = Callable[[uuid.UUID, uuid.UUID, str, str], bool]
StepRead = Callable[[uuid.UUID, uuid.UUID], "dict[str, Any] | None"]


def utcnow() -> datetime:
    """The wall clock sleeps are measured on (tests replace it)."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not STEP_NAME.fullmatch(name):
        raise StepError(f"step name {name!r} is not valid: a step name is {STEP_NAME_RULE}")
    return name


class StepBook:
    """One attempt's view of its job's steps: read once, at the first step, then kept current."""

    def __init__(self, token: uuid.UUID, job_id: uuid.UUID, write: StepWrite, read: StepRead) -> None:
        self.token, self.job_id, self.write, self.read = token, job_id, write, read
        self.done: dict[str, Any] | None = None
        self.used: set[str] = set()  # names met in this run: a repeat is a bug, not a replay
        self.sleeps = 0

    def run(self, name: str, fn: Callable[[], T]) -> T | Any:
        self._use(check_name(name))
        stored = self._stored()
        if name in stored:
            return stored[name]["result"]
        value = fn()
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: say so here, not in a RuntimeWarning later
            raise StepError(f"step {name!r} returned an awaitable: give ctx.step a plain function")
        return self._save(name, value)

    def sleep(self, seconds: float, name: str | None) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise StepError(f"ctx.sleep needs a finite number of seconds, not {seconds!r}")
        if seconds < 0:
            raise StepError(f"ctx.sleep needs 0 seconds or more, not {seconds!r}")
        if name is None:
            # Unnamed sleeps are told apart by their order in the run ('#' is no step name's).
            self.sleeps += 1
            name = f"sleep#{self.sleeps}"
        else:
            check_name(name)
        self._use(name)
        stored = self._stored()
        if name in stored:
            # Already begun: over, unless the job came back early (a crash right after this write
            # let its lease run out), then it sleeps the rest.
            left = (datetime.fromisoformat(stored[name]["result"]) - utcnow()).total_seconds()
            if left > WAKE_SLACK_SECONDS:
                raise Sleeping(left)
            return
        self._save(name, iso(utcnow() + timedelta(seconds=seconds)))
        raise Sleeping(seconds)

    def _use(self, name: str) -> None:
        if name in self.used:
            raise StepError(f"step name {name!r} is used twice in one run: names must be unique per job")
        self.used.add(name)

    def _stored(self) -> dict[str, Any]:
        if self.done is None:
            found = self.read(self.token, self.job_id)
            if found is None:
                raise LeaseLost(LOST)
            self.done = found
        return self.done

    def _save(self, name: str, value: Any) -> Any:
        try:
            result = storable_json(value)
        except (TypeError, ValueError) as exc:
            raise StepError(f"step {name!r} returned a value that is not JSON-serialisable: {exc}") from None
        if len(result) > MAX_RESULT_BYTES // 4 and len(result.encode()) > MAX_RESULT_BYTES:
            raise StepError(
                f"step {name!r} returned {len(result.encode())} bytes of JSON; a step result is at most "
                f"{MAX_RESULT_BYTES} bytes: keep big data elsewhere and return its key"
            )
        finished = iso(utcnow())
        entry = f'{{"result":{result},"finishedAt":{json.dumps(finished)}}}'
        if not self.write(self.token, self.job_id, name, entry):
            raise LeaseLost(LOST)
        # What a replay will return, so the first run sees the same value (a tuple comes back a list).
        stored = json.loads(result)
        self._stored()[name] = {"result": stored, "finishedAt": finished}
        return stored


StepList = list[StepInfo]


def summaries(stored: dict[str, Any]) -> StepList:
    """Stored steps as people see them, in the order they finished."""
    found = [
        StepInfo(
            name=name,
            finished_at=datetime.fromisoformat(entry["finishedAt"]),
            result_bytes=len(storable_json(entry["result"]).encode()),
        )
        for name, entry in stored.items()
    ]
    return sorted(found, key=lambda step: (step.finished_at, step.name))
