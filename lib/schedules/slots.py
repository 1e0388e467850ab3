"""Cron slots on a time zone's wall clock: the arithmetic, no I/O.

A slot is an instant. Local wall-clock times map to instants like this: a time a DST change skips
runs once, at the first instant after the gap; a time it repeats runs once, at its first
occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_CATCH_UP = 100  # slots one drain enqueues for one catchUp schedule
MAX_STEPS = 100_000  # cron candidates examined per search (a repeated hour skips up to 60)

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_NAMES = frozenset([*_MONTHS, *_DAYS, "L"])
_TOKEN = re.compile(r"\*|\?|L|\d{1,2}L?|\d#\d|[A-Za-z]{3}")


def check_cron(expr: str) -> str:
    """A standard five-field expression, whitespace normalised; ValueError otherwise."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("must have five fields: minute hour day-of-month month day-of-week")
    for part in re.split(r"[,/-]", " ".join(fields).replace(" ", ",")):
        # croniter also takes R (random) and H (hashed): neither names a fixed slot.
        if not _TOKEN.fullmatch(part) or (part.isalpha() and part.upper() not in _NAMES):
            raise ValueError(f"is not a valid cron expression (bad token {part!r})")
    from croniter import CroniterError, croniter  # lazy: croniter is loaded when a cron expression is read

    expr = " ".join(fields)
    if not croniter.is_valid(expr):
        raise ValueError("is not a valid cron expression")
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        raise ValueError("never matches a date") from None
    return expr


# Files of a tz database that are no IANA zone, or whose meaning is the host's: the machine's own
# zone (localtime), the POSIX default rules, "Factory", and the posix/ and right/ (leap second)
# copies. Compared in lower case: on a case-insensitive disk "LocalTime" opens the same file.
HOST_ZONES = frozenset({"localtime", "posixrules", "factory"})
HOST_ZONE_DIRS = ("posix/", "right/")
ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")


def check_timezone(name: str) -> str:
    """An IANA time zone name that this machine's tz database knows, and that means the same on
    every machine; ValueError otherwise."""
    lower = name.lower()
    if not ZONE_NAME.fullmatch(name) or lower in HOST_ZONES or lower.startswith(HOST_ZONE_DIRS):
        raise ValueError("is not an IANA time zone name (e.g. UTC, Europe/Paris)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("is not an IANA time zone name (e.g. UTC, Europe/Paris)") from None
    return name


def _exists(instant: datetime, wall: datetime, zone: ZoneInfo) -> bool:
    return instant.astimezone(zone).replace(tzinfo=None) == wall


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive local wall-clock time stands for in ``zone``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return first
    real = [t for t in (first, second) if _exists(t, wall, zone)]
    if real:
        return min(real)  # repeated: the first occurrence
    return _gap_end(min(first, second), max(first, second), zone)


def _gap_end(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant in (lo, hi]: the first instant whose offset is the later one."""
    after = hi.astimezone(zone).utcoffset()
    low, high = 0, int((hi - lo).total_seconds())
    while low < high:
        mid = (low + high) // 2
        if (lo + timedelta(seconds=mid)).astimezone(zone).utcoffset() == after:
            high = mid
        else:
            low = mid + 1
    return lo + timedelta(seconds=low)


@dataclass(frozen=True, slots=True)
class Slots:
    """The instants a cron expression names on ``zone``'s wall clock."""

    cron: str
    zone: ZoneInfo

    @classmethod
    def of(cls, cron: str, timezone: str) -> Slots:
        return cls(cron, ZoneInfo(timezone))

    def next_after(self, instant: datetime) -> datetime:
        """The first slot strictly after ``instant``."""
        from croniter import croniter  # lazy: croniter is loaded when a cron expression is read

        walls = croniter(self.cron, instant.astimezone(self.zone).replace(tzinfo=None))
        for _ in range(MAX_STEPS):
            slot = wall_to_instant(walls.get_next(datetime), self.zone)
            if slot > instant:
                return slot
        raise ValueError(f"no slot of {self.cron!r} after {instant.isoformat()}")

    def latest_until(self, instant: datetime) -> datetime | None:
        """The last slot at or before ``instant`` (None if the expression never matched)."""
        # lazy: croniter is loaded when a cron expression is read
        from croniter import CroniterError, croniter

        local = instant.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        if local.fold:
            # In the second pass of a repeated hour the rest of that hour's first pass is already
            # past: start the search at the end of the repeat.
            wall += (local.replace(fold=0).utcoffset() or timedelta()) - (local.utcoffset() or timedelta())
        walls = croniter(self.cron, wall + timedelta(microseconds=1))
        try:
            for _ in range(MAX_STEPS):
                slot = wall_to_instant(walls.get_prev(datetime), self.zone)
                if slot <= instant:
                    return slot
        except CroniterError:
            return None
        return None

    def due(self, first: datetime, now: datetime, catch_up: bool) -> tuple[list[datetime], datetime]:
        """(slots to enqueue, the next run after them) for a schedule whose next run is ``first``."""
        if not catch_up:
            latest = self.latest_until(now)
            slot = latest if latest is not None and latest >= first else first
            return [slot], self.next_after(max(now, slot))
        slots: list[datetime] = []
        slot = first
        while slot <= now and len(slots) < MAX_CATCH_UP:
            slots.append(slot)
            slot = self.next_after(slot)
        return slots, slot


def slot_key(name: str, slot: datetime) -> str:
    return f"schedule:{name}:{slot.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
