"""Business calendars: opening hours in a time zone, with dated holidays (issue 18).

A :class:`Calendar` is config (``calendars:`` in the routing file); the functions here are
pure and deterministic, so workflows may call them: ``is_open``, ``next_opening``,
``add_business_time``, ``business_time_between`` and ``parse_duration``.

All arithmetic happens on UTC instants. A day's opening ranges are wall-clock times in the
calendar's zone, turned into UTC instants for that date, so a range keeps its wall-clock
meaning across a DST change (09:00-17:00 is 8 hours on either side of it, and a 00:00-24:00
range on the day clocks go forward is 23 hours long). A range that starts or ends in the
hour skipped by clocks going forward uses the offset before the change (PEP 495, fold=0).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# How far ahead a search for an opening goes before the calendar counts as never open again
# (a calendar whose weekly hours are all covered by holidays for longer than this).
MAX_SEARCH_DAYS = 3 * 366

_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``2d`` (and sums such as ``1h30m``) -> a timedelta.

    A day is 24 hours here; business time is counted by :func:`add_business_time`.
    """
    s = text.strip().lower() if isinstance(text, str) else ""
    if not s or _DURATION_PART.sub("", s) != "":
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 10m, 2h or 2d")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s))
    return timedelta(seconds=seconds)


def _positive_duration(v: str) -> str:
    if parse_duration(v) <= timedelta(0):
        raise ValueError(f"{v!r} must be longer than zero")
    return v


# A config duration stays the text the user wrote (so config JSON round-trips unchanged);
# ``parse_duration`` turns it into a timedelta where it is used.
Duration = Annotated[str, AfterValidator(_positive_duration)]


def _parse_range(text: str) -> tuple[time, time | None]:
    """``"09:00-17:00"`` -> (09:00, 17:00); an end of ``24:00`` is returned as None (midnight after)."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not an opening range; write HH:MM-HH:MM, e.g. 09:00-17:00")
    start = time(int(m[1]), int(m[2]))
    if m[3] == "24":
        if m[4] != "00":
            raise ValueError(f"{text!r}: 24:00 is the latest end")
        return start, None
    end = time(int(m[3]), int(m[4]))
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts; split a range over midnight into two days")
    return start, end


def _check_ranges(ranges: list[str]) -> list[str]:
    parsed = sorted(_parse_range(r) for r in ranges)
    for (_, end), (start, _) in zip(parsed, parsed[1:], strict=False):
        if end is None or end > start:
            raise ValueError(f"opening ranges overlap: {', '.join(ranges)}")
    return ranges


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartialHoliday(_Strict):
    """A dated day open only in ``hours`` (e.g. Christmas Eve morning)."""

    date: date
    hours: list[str] = Field(min_length=1)

    @field_validator("hours")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        return _check_ranges(v)


class Calendar(_Strict):
    """A named business calendar: weekly opening hours in an IANA time zone, and holidays."""

    id: str
    timezone: str
    hours: dict[Day, list[str]]
    holidays: list[date | PartialHoliday] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin") from None
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for ranges in v.values():
            _check_ranges(ranges)
        if not any(v.values()):
            raise ValueError("a calendar needs opening hours on at least one day")
        return v

    @model_validator(mode="after")
    def _one_entry_per_holiday(self) -> Calendar:
        seen: set[date] = set()
        for h in self.holidays:
            d = h.date if isinstance(h, PartialHoliday) else h
            if d in seen:
                raise ValueError(f"holiday {d.isoformat()} is listed twice")
            seen.add(d)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def ranges_on(self, day: date) -> list[tuple[time, time | None]]:
        """The opening ranges (wall clock) on one local date, holidays applied."""
        for h in self.holidays:
            if isinstance(h, PartialHoliday):
                if h.date == day:
                    return sorted(_parse_range(r) for r in h.hours)
            elif h == day:
                return []
        return sorted(_parse_range(r) for r in self.hours.get(DAYS[day.weekday()], []))


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("calendar functions need an aware datetime (with a time zone)")
    return t.astimezone(UTC)


def _intervals_on(cal: Calendar, day: date) -> list[tuple[datetime, datetime]]:
    """A local date's opening ranges as UTC instants, adjacent ones merged."""
    zone = cal.zone
    out: list[tuple[datetime, datetime]] = []
    for start, end in cal.ranges_on(day):
        a = datetime.combine(day, start, zone).astimezone(UTC)
        if end is None:
            b = datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC)
        else:
            b = datetime.combine(day, end, zone).astimezone(UTC)
        if b <= a:  # a range lying wholly inside the hour skipped by a DST change
            continue
        if out and out[-1][1] >= a:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intervals_from(cal: Calendar, t: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Opening intervals (UTC) that end after ``t``, clipped to start no earlier than ``t``,
    in time order (one per range and day: a range up to 24:00 and the next day's range from
    00:00 come as two adjacent intervals); stops after MAX_SEARCH_DAYS."""
    day = t.astimezone(cal.zone).date() - timedelta(days=1)
    for _ in range(MAX_SEARCH_DAYS + 2):
        for a, b in _intervals_on(cal, day):
            if b > t:
                yield max(a, t), b
        day += timedelta(days=1)


def is_open(cal: Calendar | None, t: datetime) -> bool:
    """Whether the calendar is open at ``t`` (no calendar: always open)."""
    if cal is None:
        return True
    u = _utc(t)
    return any(a <= u < b for a, b in _intervals_on(cal, u.astimezone(cal.zone).date()))


def next_opening(cal: Calendar | None, t: datetime) -> datetime:
    """``t`` (in UTC) when open, else the next moment the calendar opens."""
    u = _utc(t)
    if cal is None:
        return u
    for a, _ in _intervals_from(cal, u):
        return a
    raise ValueError(f"calendar {cal.id!r} does not open within {MAX_SEARCH_DAYS} days of {u.isoformat()}")


def next_closing(cal: Calendar | None, t: datetime) -> datetime | None:
    """When the calendar next closes at or after ``t`` (None: 24x7, or open for longer than
    the search horizon)."""
    u = _utc(t)
    if cal is None:
        return None
    end: datetime | None = None
    for a, b in _intervals_from(cal, u):
        if end is not None and a > end:
            return end
        end = b
    return None


def add_business_time(cal: Calendar | None, t: datetime, delta: timedelta) -> datetime:
    """The instant at which ``delta`` of open time has passed since ``t`` (no calendar: 24x7).

    Counting starts at the next opening when ``t`` is closed; the result can be a closing
    time (the last business second of a day), never a moment inside closed time.
    """
    u = _utc(t)
    if delta < timedelta(0):
        raise ValueError("add_business_time needs a duration of zero or more")
    if cal is None:
        return u + delta
    if delta == timedelta(0):
        return u
    left = delta
    for a, b in _intervals_from(cal, u):
        if b - a >= left:
            return a + left
        left -= b - a
    raise ValueError(f"calendar {cal.id!r} does not open within {MAX_SEARCH_DAYS} days of {u.isoformat()}")


def business_time_between(cal: Calendar | None, a: datetime, b: datetime) -> timedelta:
    """Open time in ``[a, b)`` (zero when ``b`` is not after ``a``; no calendar: ``b - a``)."""
    ua, ub = _utc(a), _utc(b)
    if ub <= ua:
        return timedelta(0)
    if cal is None:
        return ub - ua
    total = timedelta(0)
    for s, e in _intervals_from(cal, ua):
        if s >= ub:
            break
        total += min(e, ub) - s
    return total
