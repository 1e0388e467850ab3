"""The step book on its own (no database): names, sleeps, replays and refused writes."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from lib import JobContext, steps
from lib.errors import LeaseLost, Sleeping, StepError
from lib.steps import StepBook

JOB, TOKEN = uuid.uuid4(), uuid.uuid4()


class Store:
    """A job's steps in memory; ``lost`` makes every fenced read and write refused."""

    def __init__(self) -> None:
        self.steps: dict[str, Any] = {}
        self.lost = False
        self.reads = 0

    def write(self, token: uuid.UUID, job_id: uuid.UUID, name: str, entry: str) -> bool:
        if self.lost:
            return False
        self.steps[name] = json.loads(entry)
        return True

    def read(self, token: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        self.reads += 1
        return None if self.lost else dict(self.steps)

    def book(self) -> StepBook:
        return StepBook(TOKEN, JOB, self.write, self.read)


def test_a_finished_step_is_not_run_again_and_returns_its_stored_value() -> None:
    store = Store()
    calls: list[str] = []

    def body(name: str, value: Any) -> Any:
        calls.append(name)
        return value

    first = store.book().run("a", lambda: body("a", (1, "x")))
    assert first == [1, "x"]  # what a replay returns, also on the first run
    book = store.book()
    assert book.run("a", lambda: body("again", 2)) == [1, "x"]
    assert book.run("b", lambda: body("b", None)) is None
    assert calls == ["a", "b"]
    assert store.reads == 2  # once per run, not per step
    assert store.steps["a"]["finishedAt"].endswith("Z")


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), True, "5"])
def test_a_sleep_needs_a_finite_number_of_seconds(seconds: Any) -> None:
    with pytest.raises(StepError, match=r"ctx\.sleep needs"):
        Store().book().sleep(seconds, None)


def test_a_sleep_is_stored_then_over_on_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    with pytest.raises(Sleeping) as slept:
        store.book().sleep(30, None)
    assert (slept.value.delay_seconds, slept.value.message) == (30, "sleeping 30 s (ctx.sleep)")
    later = steps.utcnow() + timedelta(seconds=30)
    monkeypatch.setattr(steps, "utcnow", lambda: later)
    store.book().sleep(30, None)  # returns: the sleep is over
    with pytest.raises(Sleeping):  # a second unnamed sleep is another sleep
        book = store.book()
        book.sleep(30, None)
        book.sleep(30, None)
    assert set(store.steps) == {"sleep#1", "sleep#2"}


def test_a_refused_write_or_read_is_lease_lost() -> None:
    store = Store()
    book = store.book()
    book.run("a", lambda: 1)
    store.lost = True
    ran: list[int] = []
    with pytest.raises(LeaseLost):
        book.run("b", lambda: ran.extend([1]))
    assert ran == [1]  # the body ran; its result could not be stored
    with pytest.raises(LeaseLost):
        store.book().run("a", lambda: 1)


def test_outside_a_drain_a_step_just_runs_and_a_sleep_raises() -> None:
    ctx = JobContext("id", "t", 1, 1, None, "c", 0.0, lambda *a: None, JOB)
    assert ctx.step("a", lambda: 5) == 5
    with pytest.raises(StepError):
        ctx.step("", lambda: 5)
    with pytest.raises(Sleeping):
        ctx.sleep(0.5)
    assert Sleeping(0.5).message == "sleeping 0.50 s (ctx.sleep)"


def test_a_step_result_must_be_small_json_from_a_plain_function() -> None:
    async def fetch() -> int:
        return 1

    with pytest.raises(StepError, match="returned an awaitable"):
        Store().book().run("a", fetch)
    with pytest.raises(StepError, match="a step result is at most 1048576 bytes"):
        Store().book().run("big", lambda: "é" * (1 << 19) + "x")
    assert len(Store().book().run("fits", lambda: "x" * ((1 << 20) - 2))) == (1 << 20) - 2
