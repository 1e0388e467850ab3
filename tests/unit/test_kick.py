"""The kick's collapsing rule on an injected clock: one kick starts when none is in flight and the
interval is over; anything asked in between owes exactly one trailing kick."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lib import kick
from lib.config import Settings
from lib.kick import Kicker, Shot, Target

TARGET = Target("http://127.0.0.1:9/api/jobs/process?maxJobs=1000", {}, answer_timeout=40.0)


class Harness:
    """A Kicker whose clock, timers and shots are ours to drive."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.answers: list[Callable[[], None]] = []  # one per shot started, call it to answer
        self.kicker = Kicker(TARGET, 1.0, clock=lambda: self.now, later=self._later, shoot=self._shoot)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.append((delay, fn))

    def _shoot(self, _target: Target, done: Callable[[], None]) -> Shot:
        self.answers.append(done)
        return Shot(TARGET, done)

    def fire_timers(self) -> None:
        timers, self.timers = self.timers, []
        for _, fn in timers:
            fn()


def test_a_burst_starts_one_kick_and_owes_one() -> None:
    h = Harness()
    assert h.kicker.kick() is not None
    assert all(h.kicker.kick() is None for _ in range(99))
    assert len(h.answers) == 1 and h.kicker.owed
    assert h.timers == []  # in flight: its answer decides, not a timer
    h.now += 0.3
    h.answers[0]()  # the drain answered, 0.7 s of the interval left
    assert [delay for delay, _ in h.timers] == [pytest.approx(0.7)]
    h.now += 0.7
    h.fire_timers()
    assert len(h.answers) == 2 and not h.kicker.owed
    h.answers[1]()
    assert h.timers == [] and h.kicker.started == 2


def test_a_quiet_enqueue_after_the_interval_kicks_at_once() -> None:
    h = Harness()
    h.kicker.kick()
    h.answers[0]()
    h.now += 1.0
    assert h.kicker.kick() is not None and len(h.answers) == 2 and h.timers == []


def test_within_the_interval_a_timer_owes_the_kick() -> None:
    h = Harness()
    h.kicker.kick()
    h.now += 0.1
    h.answers[0]()
    h.now += 0.1
    assert h.kicker.kick() is None
    assert [delay for delay, _ in h.timers] == [pytest.approx(0.8)]
    assert h.kicker.kick() is None and len(h.timers) == 1  # one timer, however many ask
    h.now += 0.8
    h.fire_timers()
    assert len(h.answers) == 2


def test_a_kick_never_answered_stops_counting_as_in_flight() -> None:
    h = Harness()
    h.kicker.kick()  # frozen, say: no answer ever comes
    h.now += 10
    assert h.kicker.kick() is None
    h.now += TARGET.answer_timeout
    assert h.kicker.kick() is not None and len(h.answers) == 2


def settings(**values: str) -> Settings:
    base = {"jobs_api_keys": "k1,k2", "cron_secret": "", "jobs_public_url": "", "vercel_url": ""}
    return Settings(**{**base, **values})


def test_the_target_is_the_own_deployment_with_an_admin_key() -> None:
    target = kick.target_from_settings(settings(jobs_public_url="https://app.example.com/"))
    assert target is not None
    assert target.url == "https://app.example.com/api/jobs/process?maxJobs=1000"
    assert target.headers == {"x-api-key": "k1", kick.KICK_HEADER: "1"}
    vercel = kick.target_from_settings(
        settings(vercel_url="app-abc.vercel.app", vercel_automation_bypass_secret="bypass")
    )
    assert vercel is not None and vercel.url.startswith("https://app-abc.vercel.app/api/jobs/process")
    assert vercel.headers["x-vercel-protection-bypass"] == "bypass"
    cron_only = kick.target_from_settings(
        settings(jobs_api_keys="", cron_secret="c" * 20, jobs_public_url="http://127.0.0.1:1")
    )
    assert cron_only is not None and cron_only.headers["Authorization"] == "Bearer " + "c" * 20


def test_kicks_are_off_without_a_url_or_when_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    assert kick.from_settings(settings()) is None
    assert kick.from_settings(settings(jobs_public_url="https://a.example", jobs_kick="off")) is None
    assert kick.from_settings(settings(jobs_public_url="https://a.example", jobs_kick="")) is not None
    with caplog.at_level("WARNING", logger="sluice.kick"):
        assert kick.from_settings(settings(jobs_kick="on")) is None
    assert "JOBS_KICK is on but JOBS_PUBLIC_URL (or VERCEL_URL) is not set" in caplog.text
    with pytest.raises(ValueError, match="JOBS_KICK must be on, off"):
        settings(jobs_kick="sometimes")
