"""Cron slots on a wall clock: DST gaps run once after the gap, repeated times run once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError as PydanticError

from lib.schedules import ScheduleSpec, Slots, check_cron, check_timezone, slot_key, wall_to_instant


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def slots_between(slots: Slots, start: str, end: str) -> list[str]:
    out, t = [], at(start)
    while True:
        t = slots.next_after(t)
        if t > at(end):
            return out
        out.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))


@pytest.mark.parametrize(
    ("zone", "start", "end", "expected"),
    [
        # Paris springs forward on 2026-03-29 at 02:00 → 03:00: 02:30 runs at 03:00 CEST.
        (
            "Europe/Paris",
            "2026-03-27T12:00:00Z",
            "2026-03-30T12:00:00Z",
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        ),
        # Paris falls back on 2026-10-25 at 03:00 → 02:00: 02:30 happens twice, runs once (first).
        (
            "Europe/Paris",
            "2026-10-23T12:00:00Z",
            "2026-10-26T12:00:00Z",
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        # New York springs forward on 2026-03-08 at 02:00 → 03:00: 02:30 runs at 03:00 EDT.
        (
            "America/New_York",
            "2026-03-06T12:00:00Z",
            "2026-03-09T12:00:00Z",
            ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
        ),
        # New York falls back on 2026-11-01 at 02:00 → 01:00: 02:30 exists once (EST).
        (
            "America/New_York",
            "2026-10-30T12:00:00Z",
            "2026-11-02T12:00:00Z",
            ["2026-10-31T06:30:00Z", "2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"],
        ),
    ],
)
def test_daily_0230_runs_once_per_day_across_dst(
    zone: str, start: str, end: str, expected: list[str]
) -> None:
    assert slots_between(Slots.of("30 2 * * *", zone), start, end) == expected


def test_repeated_hour_runs_once_at_first_occurrence() -> None:
    # 01:30 happens at 05:30Z (EDT) and 06:30Z (EST) on 2026-11-01; only the first runs.
    got = slots_between(
        Slots.of("30 1 * * *", "America/New_York"), "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"
    )
    assert got == ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]


def test_every_20_minutes_through_a_gap_and_a_repeat() -> None:
    paris = slots_between(
        Slots.of("*/20 * * * *", "Europe/Paris"), "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"
    )
    # 02:00, 02:20, 02:40 (skipped) collapse into one run at 03:00 CEST = 01:00Z.
    assert paris == ["2026-03-29T00:40:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:20:00Z"]
    ny = slots_between(
        Slots.of("*/20 * * * *", "America/New_York"), "2026-11-01T05:30:00Z", "2026-11-01T07:30:00Z"
    )
    # The repeated 01:00–02:00 EST hour doesn't run again.
    assert ny == ["2026-11-01T05:40:00Z", "2026-11-01T07:00:00Z", "2026-11-01T07:20:00Z"]


def test_latest_until_in_the_second_pass_of_a_repeated_hour() -> None:
    slots = Slots.of("*/20 * * * *", "America/New_York")
    # 06:10Z is 01:10 EST (second pass): the latest slot is 01:40 EDT = 05:40Z.
    assert slots.latest_until(at("2026-11-01T06:10:00Z")) == at("2026-11-01T05:40:00Z")
    assert slots.latest_until(at("2026-11-01T07:00:00Z")) == at("2026-11-01T07:00:00Z")
    paris = Slots.of("30 2 * * *", "Europe/Paris")
    assert paris.latest_until(at("2026-03-29T01:00:00Z")) == at("2026-03-29T01:00:00Z")
    assert paris.latest_until(at("2026-03-29T00:59:59Z")) == at("2026-03-28T01:30:00Z")


def test_wall_to_instant_maps_gaps_and_folds() -> None:
    paris = ZoneInfo("Europe/Paris")
    assert wall_to_instant(datetime(2026, 3, 29, 2, 30), paris) == at("2026-03-29T01:00:00Z")
    assert wall_to_instant(datetime(2026, 10, 25, 2, 30), paris) == at("2026-10-25T00:30:00Z")
    assert wall_to_instant(datetime(2026, 7, 1, 12, 0), paris) == at("2026-07-01T10:00:00Z")
    # Lord Howe Island shifts by 30 minutes.
    howe = ZoneInfo("Australia/Lord_Howe")
    assert wall_to_instant(datetime(2026, 10, 4, 2, 15), howe) == at("2026-10-03T15:30:00Z")


def test_due_latest_only_or_catch_up() -> None:
    slots = Slots.of("*/10 * * * *", "UTC")
    first, now = at("2026-05-01T00:10:00Z"), at("2026-05-01T01:05:00Z")
    assert slots.due(first, now, catch_up=False) == ([at("2026-05-01T01:00:00Z")], at("2026-05-01T01:10:00Z"))
    caught, following = slots.due(first, now, catch_up=True)
    assert [t.strftime("%H:%M") for t in caught] == ["00:10", "00:20", "00:30", "00:40", "00:50", "01:00"]
    assert following == at("2026-05-01T01:10:00Z")
    many, following = slots.due(first, first + timedelta(days=2), catch_up=True)
    assert len(many) == 100 and following == first + timedelta(minutes=1000)


def test_slot_key_is_utc_seconds() -> None:
    assert slot_key("n", at("2026-03-29T03:00:00+02:00")) == "schedule:n:2026-03-29T01:00:00Z"


@pytest.mark.parametrize(
    "cron", ["* * * * * *", "@daily", "61 * * * *", "R * * * *", "H * * * *", "0 0 30 2 *", "x", "0 0 * * 8"]
)
def test_bad_cron_is_refused(cron: str) -> None:
    with pytest.raises(ValueError):
        check_cron(cron)


@pytest.mark.parametrize(
    "cron", ["*/5 * * * *", "0 2 * * SUN", "30 1 1 JAN-JUN *", "0 0 L * *", "0  3 * * 1-5"]
)
def test_good_cron_is_normalised(cron: str) -> None:
    assert check_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize("zone", ["Europe", "utc", "../etc/passwd", "/etc/localtime", "Mars/Olympus"])
def test_bad_timezone_is_refused(zone: str) -> None:
    with pytest.raises(ValueError):
        check_timezone(zone)


def test_spec_is_strict_camel_case_and_defaults_to_utc() -> None:
    spec = ScheduleSpec.model_validate(
        {"cron": "0 2 * * *", "type": "noop", "catchUp": True, "maxAttempts": 2, "tenantId": "t1"}
    )
    assert (spec.timezone, spec.enabled, spec.catch_up, spec.tenant_id) == ("UTC", True, True, "t1")
    assert spec.options() == {"priority": 0, "maxAttempts": 2, "timeoutSeconds": None, "backoff": None}
    for bad in (
        {"cron": "0 2 * * *", "type": "noop", "nope": 1},
        {"cron": "0 2 * * *", "type": "noop", "priority": "5"},
        {"cron": "0 2 * * *"},
        {"cron": "0 2 * * *", "type": "noop", "timezone": "Nowhere/Land"},
        {"cron": "0 2 * * *\x00", "type": "noop"},
    ):
        with pytest.raises(PydanticError):
            ScheduleSpec.model_validate(bad)


def test_slots_are_utc() -> None:
    assert Slots.of("0 * * * *", "Asia/Kolkata").next_after(at("2026-01-01T00:00:00Z")).tzinfo == UTC
