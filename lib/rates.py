"""Rates as values: ``"50/hour"`` → Rate, for job types' run limits (lib/ratelimit.py) and the
settings that name rates (JOBS_RATE_LIMITS, JOBS_TENANT_ENQUEUE_LIMIT). No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86_400,
    "day": 86_400,
    "days": 86_400,
}
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{0,6})\s*([A-Za-z]+)\s*")
_PATH = re.compile(r"payload(\.[A-Za-z0-9_-]{1,100}){1,8}")
MAX_WINDOW_SECONDS = 31 * 86_400


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` events per ``seconds``."""

    limit: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.seconds}s"


def parse_rate(text: str | Rate) -> Rate:
    """``"50/hour"``, ``"10/15min"``, ``"1000/day"`` → Rate; ValueError otherwise."""
    if isinstance(text, Rate):
        return text
    match = _RATE.fullmatch(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a rate like 50/hour, 10/15min or 1000/day")
    limit, seconds = int(match.group(1)), int(match.group(2) or 1) * unit
    if not 1 <= limit <= 1_000_000_000 or not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"{text!r}: the limit must be ≥ 1 and the window 1 s to 31 days")
    return Rate(limit, seconds)


def parse_rates(text: str) -> dict[str, Rate]:
    """``"email.ses=50/hour,sms.send=20/hour"`` → {type: Rate}."""
    rates: dict[str, Rate] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, rate = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not type=rate (e.g. email.ses=50/hour)")
        rates[name.strip()] = parse_rate(rate)
    return rates


def parse_key(rate_key: str | None) -> tuple[str, ...] | None:
    """``"payload.userId"`` → ("userId",); None: the whole type is one bucket."""
    if rate_key is None:
        return None
    if not _PATH.fullmatch(rate_key):
        raise ValueError(f"rate_key {rate_key!r} must be a payload path like payload.userId")
    return tuple(rate_key.split(".")[1:])
