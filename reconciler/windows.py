"""Maintenance windows: 5-field cron expressions that open a window for a duration.

Pure: the caller passes the time. A window is open at `now` when one of its cron start times
falls in (now - duration, now], evaluated in the window's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NAMES = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
    "sun": 0,
    "mon": 1,
    "tue": 2,
    "wed": 3,
    "thu": 4,
    "fri": 5,
    "sat": 6,
}
FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
UNITS = {"m": 1, "h": 60, "d": 1440}
MAX_DURATION = timedelta(days=31)
"""Longest a maintenance window may stay open (a longer one would be open all the time)."""
_COMMON_YEAR = 2023
"""A year without February 29: a cron that fires in it fires every year."""


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, t: datetime) -> bool:
        if t.minute not in self.minutes or t.hour not in self.hours or t.month not in self.months:
            return False
        day_ok = t.day in self.days
        weekday_ok = (t.isoweekday() % 7) in self.weekdays
        # cron's rule: when both day fields are restricted, either may match
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not re.fullmatch(r"[0-9]{1,3}", step_text) or int(step_text) < 1:
                raise CronError(f"bad step in {name}: {step_text[:20]!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, name, low, high), _value(b, name, low, high)
        else:
            start = _value(part, name, low, high)
            end = high if step > 1 else start
        if start > end:
            raise CronError(f"empty range in {name}: {part[:20]!r}")
        values.update(range(start, end + 1, step))
    if name == "day of week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _value(text: str, name: str, low: int, high: int) -> int:
    if text in NAMES:
        return NAMES[text]
    if not re.fullmatch(r"[0-9]{1,3}", text) or not low <= int(text) <= high:
        raise CronError(f"{name} must be {low}-{high}, not {text[:20]!r}")
    return int(text)


@lru_cache(maxsize=256)
def parse_cron(expression: str) -> Cron:
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(f"cron needs 5 fields (minute hour day month weekday), got {len(parts)}")
    minutes, hours, days, months, weekdays = (
        _field(p, *spec) for p, spec in zip(parts, FIELDS, strict=True)
    )
    return Cron(
        minutes, hours, days, months, weekdays, any_day=parts[2] == "*", any_weekday=parts[4] == "*"
    )


def check_fires_yearly(expression: str) -> None:
    """Refuse a cron that does not fire every year (`0 2 30 2 *`, or only on February 29):
    its window would never open and the actions it guards would wait for ever."""
    spec = parse_cron(expression)
    hour, minute = min(spec.hours), min(spec.minutes)
    day = date(_COMMON_YEAR, 1, 1)
    while day.year == _COMMON_YEAR:
        if spec.matches(datetime(day.year, day.month, day.day, hour, minute)):
            return
        day += timedelta(days=1)
    raise CronError(
        f"cron {expression[:60]!r} does not fire every year: a maintenance window "
        "must open at least once a year"
    )


def parse_duration(text: str) -> timedelta:
    """A window's length, `90m`, `4h` or `1d`, from one minute to MAX_DURATION."""
    match = re.fullmatch(r"([0-9]{1,6})([mhd])", text)
    if not match:
        raise CronError(f"duration must look like 90m, 4h or 1d, not {text[:40]!r}")
    length = timedelta(minutes=int(match.group(1)) * UNITS[match.group(2)])
    if not timedelta(minutes=1) <= length <= MAX_DURATION:
        raise CronError(f"duration must be between 1m and {MAX_DURATION.days}d")
    return length


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name of the zone database that is a folder (`America`) or unreadable.
        raise CronError(f"unknown time zone {name[:60]!r}") from None


@lru_cache(maxsize=1024)
def is_open(cron: str, duration: str, timezone: str, now: datetime) -> bool:
    """Whether a window that opens at `cron` for `duration` is open at `now` (aware)."""
    spec = parse_cron(cron)
    length = parse_duration(duration)
    local = now.astimezone(zone(timezone)).replace(second=0, microsecond=0)
    minutes = int(length.total_seconds() // 60)
    return any(spec.matches(local - timedelta(minutes=m)) for m in range(minutes))


@lru_cache(maxsize=1024)
def next_opening(
    cron: str, timezone: str, now: datetime, horizon_days: int = 62
) -> datetime | None:
    """When the window opens next, within `horizon_days`, for the plan's explanation."""
    spec = parse_cron(cron)
    local = now.astimezone(zone(timezone)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for m in range(horizon_days * 1440):
        candidate = local + timedelta(minutes=m)
        if spec.matches(candidate):
            return candidate
    return None
