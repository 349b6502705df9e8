"""Business calendars: pure functions (no Temporal needed), DST changes included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from routedesk.calendars import (
    Calendar,
    add_business_time,
    business_time_between,
    is_open,
    next_closing,
    next_opening,
    parse_duration,
)
from routedesk.config import ConfigError, parse_config
from tests.configs import agent, assignment_config

BERLIN = ZoneInfo("Europe/Berlin")

# The example: Mon 9-17, Tue 9-12 and 13-17, Wed 9-17, closed Thu-Sun;
# Christmas Day closed, Christmas Eve (a Thursday in 2026) open 9-12.
OFFICE = Calendar.model_validate(
    {
        "id": "office",
        "timezone": "Europe/Berlin",
        "hours": {"mon": ["09:00-17:00"], "tue": ["09:00-12:00", "13:00-17:00"], "wed": ["09:00-17:00"]},
        "holidays": ["2026-12-25", {"date": "2026-12-24", "hours": ["09:00-12:00"]}, "2026-12-30"],
    }
)
WEEKDAYS = Calendar.model_validate(
    {
        "id": "weekdays",
        "timezone": "Europe/Berlin",
        "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    }
)
# Open all day Sunday and Monday: the days around both 2026 DST changes in Berlin are Sundays.
SUNDAYS = Calendar.model_validate(
    {"id": "sundays", "timezone": "Europe/Berlin", "hours": {"sun": ["00:00-24:00"], "mon": ["00:00-24:00"]}}
)


def b(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    """A Berlin wall-clock time."""
    return datetime(y, mo, d, h, mi, s, tzinfo=BERLIN)


def u(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


# --- open / closed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (b(2026, 12, 7, 9, 0), True),  # Monday, opening second
        (b(2026, 12, 7, 8, 59, 59), False),
        (b(2026, 12, 7, 16, 59, 59), True),
        (b(2026, 12, 7, 17, 0), False),  # closing is exclusive
        (b(2026, 12, 8, 12, 30), False),  # Tuesday lunch break
        (b(2026, 12, 8, 13, 0), True),
        (b(2026, 12, 10, 10, 0), False),  # Thursday: no hours
        (b(2026, 12, 13, 10, 0), False),  # Sunday
        (b(2026, 12, 24, 10, 0), True),  # partial holiday on a Thursday: open only those hours
        (b(2026, 12, 24, 13, 0), False),
        (b(2026, 12, 30, 10, 0), False),  # full holiday on a Wednesday
        (b(2026, 12, 29, 10, 0), True),
        (u(2026, 12, 7, 8, 0), True),  # 09:00 in Berlin (CET, UTC+1)
        (u(2026, 12, 7, 7, 59), False),
        (u(2026, 7, 6, 7, 0), True),  # 09:00 in Berlin in summer (CEST, UTC+2)
        (u(2026, 7, 6, 6, 59), False),
        (datetime(2026, 12, 7, 3, 0, tzinfo=ZoneInfo("America/New_York")), True),  # any zone in
    ],
)
def test_is_open(when: datetime, expected: bool) -> None:
    assert is_open(OFFICE, when) is expected


def test_no_calendar_is_always_open() -> None:
    assert is_open(None, u(2026, 12, 13, 3, 0))
    assert next_opening(None, b(2026, 12, 13, 3, 0)) == u(2026, 12, 13, 2, 0)
    assert next_closing(None, u(2026, 12, 13, 3, 0)) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(OFFICE, datetime(2026, 12, 7, 10, 0))


# --- next opening -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (b(2026, 12, 7, 10, 0), b(2026, 12, 7, 10, 0)),  # open: t itself
        (b(2026, 12, 7, 6, 0), b(2026, 12, 7, 9, 0)),  # early morning
        (b(2026, 12, 7, 17, 0), b(2026, 12, 8, 9, 0)),  # evening -> next morning
        (b(2026, 12, 8, 12, 0), b(2026, 12, 8, 13, 0)),  # lunch break
        (b(2026, 12, 9, 18, 0), b(2026, 12, 14, 9, 0)),  # Wednesday night -> Monday (Thu-Sun closed)
        (b(2026, 12, 23, 18, 0), b(2026, 12, 24, 9, 0)),  # partial holiday opens a closed Thursday
        (b(2026, 12, 24, 12, 0), b(2026, 12, 28, 9, 0)),  # after it closes, Christmas Day and weekend
        (b(2026, 12, 29, 17, 30), b(2027, 1, 4, 9, 0)),  # full holiday Wednesday 30th skipped
    ],
)
def test_next_opening(when: datetime, expected: datetime) -> None:
    got = next_opening(OFFICE, when)
    assert got == expected
    assert got.tzinfo is UTC
    assert is_open(OFFICE, got)


def test_next_closing() -> None:
    assert next_closing(OFFICE, b(2026, 12, 8, 10, 0)) == b(2026, 12, 8, 12, 0)
    assert next_closing(OFFICE, b(2026, 12, 8, 12, 30)) == b(2026, 12, 8, 17, 0)
    # Sunday 00:00 to Monday 24:00 is one opening across midnight.
    assert next_closing(SUNDAYS, b(2026, 12, 13, 10, 0)) == b(2026, 12, 15, 0, 0)


# --- business time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "delta", "expected"),
    [
        (b(2026, 12, 7, 10, 0), timedelta(hours=2), b(2026, 12, 7, 12, 0)),  # same day
        (b(2026, 12, 7, 16, 0), timedelta(hours=2), b(2026, 12, 8, 10, 0)),  # across the night
        (b(2026, 12, 7, 20, 0), timedelta(minutes=30), b(2026, 12, 8, 9, 30)),  # starts closed
        (b(2026, 12, 8, 11, 0), timedelta(hours=2), b(2026, 12, 8, 14, 0)),  # across the lunch break
        (b(2026, 12, 9, 16, 0), timedelta(hours=2), b(2026, 12, 14, 10, 0)),  # across Thu-Sun
        (b(2026, 12, 7, 9, 0), timedelta(hours=23), b(2026, 12, 9, 17, 0)),  # a week: its last closing
        (b(2026, 12, 7, 16, 0), timedelta(hours=1), b(2026, 12, 7, 17, 0)),  # ends on the closing
        (b(2026, 12, 23, 16, 0), timedelta(hours=2), b(2026, 12, 24, 10, 0)),  # partial holiday counts
        (b(2026, 12, 23, 16, 0), timedelta(hours=5), b(2026, 12, 28, 10, 0)),  # 1 + 3, then Monday
        (b(2026, 12, 29, 16, 0), timedelta(hours=2), b(2027, 1, 4, 10, 0)),  # full holiday skipped
        (b(2026, 12, 7, 10, 0), timedelta(0), b(2026, 12, 7, 10, 0)),
    ],
)
def test_add_business_time(start: datetime, delta: timedelta, expected: datetime) -> None:
    got = add_business_time(OFFICE, start, delta)
    assert got == expected
    assert got.tzinfo is UTC
    # business_time_between is its inverse whenever the start is open
    if is_open(OFFICE, start):
        assert business_time_between(OFFICE, start, got) == delta


def test_weekend_on_a_weekday_calendar() -> None:
    friday = b(2026, 12, 11, 16, 30)
    assert add_business_time(WEEKDAYS, friday, timedelta(hours=1)) == b(2026, 12, 14, 9, 30)
    assert business_time_between(WEEKDAYS, friday, b(2026, 12, 14, 9, 30)) == timedelta(hours=1)
    assert business_time_between(WEEKDAYS, b(2026, 12, 12, 0, 0), b(2026, 12, 13, 23, 0)) == timedelta(0)


def test_no_calendar_is_wall_clock_time() -> None:
    start = b(2026, 3, 28, 12, 0)
    assert add_business_time(None, start, timedelta(hours=24)) == u(2026, 3, 29, 11, 0)
    assert business_time_between(None, start, b(2026, 3, 29, 12, 0)) == timedelta(hours=23)


def test_business_time_between() -> None:
    assert business_time_between(OFFICE, b(2026, 12, 7, 0, 0), b(2026, 12, 14, 0, 0)) == timedelta(hours=23)
    assert business_time_between(OFFICE, b(2026, 12, 8, 11, 0), b(2026, 12, 8, 14, 0)) == timedelta(hours=2)
    assert business_time_between(OFFICE, b(2026, 12, 8, 14, 0), b(2026, 12, 8, 11, 0)) == timedelta(0)
    assert business_time_between(OFFICE, b(2026, 12, 21, 0, 0), b(2026, 12, 28, 0, 0)) == timedelta(hours=26)


# --- DST: Europe/Berlin goes to CEST on 2026-03-29 and back to CET on 2026-10-25 (both Sundays) ---


def test_spring_forward_day_is_23_business_hours() -> None:
    sunday = b(2026, 3, 29, 0, 0)
    monday = b(2026, 3, 30, 0, 0)
    assert business_time_between(SUNDAYS, sunday, monday) == timedelta(hours=23)
    # 01:30 CET + 1 business hour is 03:30 CEST: 02:00-03:00 does not exist
    assert add_business_time(SUNDAYS, b(2026, 3, 29, 1, 30), timedelta(hours=1)) == b(2026, 3, 29, 3, 30)
    assert add_business_time(SUNDAYS, sunday, timedelta(hours=23)) == monday
    assert is_open(SUNDAYS, u(2026, 3, 29, 1, 30))


def test_fall_back_day_is_25_business_hours() -> None:
    sunday = b(2026, 10, 25, 0, 0)
    monday = b(2026, 10, 26, 0, 0)
    assert business_time_between(SUNDAYS, sunday, monday) == timedelta(hours=25)
    # 02:30 happens twice; an hour after the first (CEST) one is the second (CET) one
    first = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0)
    second = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1)
    assert add_business_time(SUNDAYS, first, timedelta(hours=1)) == second.astimezone(UTC)
    assert add_business_time(SUNDAYS, sunday, timedelta(hours=25)) == monday


def test_office_hours_keep_their_wall_clock_across_dst() -> None:
    # Friday 27 March 16:00 CET + 2 business hours = Monday 30 March 10:00 CEST
    got = add_business_time(WEEKDAYS, b(2026, 3, 27, 16, 0), timedelta(hours=2))
    assert got == u(2026, 3, 30, 8, 0) == b(2026, 3, 30, 10, 0)
    assert next_opening(WEEKDAYS, b(2026, 3, 28, 12, 0)) == u(2026, 3, 30, 7, 0)  # 09:00 CEST
    # and back: Friday 23 October 16:00 CEST + 2h = Monday 26 October 10:00 CET (09:00 UTC)
    got = add_business_time(WEEKDAYS, b(2026, 10, 23, 16, 0), timedelta(hours=2))
    assert got == u(2026, 10, 26, 9, 0)
    assert next_opening(WEEKDAYS, b(2026, 10, 24, 12, 0)) == u(2026, 10, 26, 8, 0)  # 09:00 CET
    week = business_time_between(WEEKDAYS, b(2026, 3, 23, 0, 0), b(2026, 4, 6, 0, 0))
    assert week == timedelta(hours=80)


def test_a_range_inside_the_skipped_hour_is_empty() -> None:
    cal = Calendar.model_validate(
        {"id": "night", "timezone": "Europe/Berlin", "hours": {"sun": ["02:00-03:00", "04:00-05:00"]}}
    )
    assert next_opening(cal, b(2026, 3, 29, 0, 0)) == b(2026, 3, 29, 4, 0)
    assert next_opening(cal, b(2026, 3, 22, 0, 0)) == b(2026, 3, 22, 2, 0)


# --- durations and validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(minutes=90)),
        (" 3M ", timedelta(minutes=3)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "m", "10 minutes", "-5m", "1.5h", "2w"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"hours": {"mon": ["9-17"]}}, "HH:MM-HH:MM"),
        ({"hours": {"mon": ["17:00-09:00"]}}, "ends before it starts"),
        ({"hours": {"mon": ["09:00-13:00", "12:00-17:00"]}}, "overlap"),
        ({"hours": {"mon": []}}, "at least one day"),
        ({"hours": {"monday": ["09:00-17:00"]}}, "mon"),
        ({"holidays": ["2026-13-01"]}, "date"),
        ({"holidays": ["2026-12-25", "2026-12-25"]}, "listed twice"),
        ({"holidays": [{"date": "2026-12-24", "hours": ["12:00-09:00"]}]}, "ends before it starts"),
    ],
)
def test_calendar_validation(patch: dict[str, Any], message: str) -> None:
    data = {"id": "c", "timezone": "Europe/Berlin", "hours": {"mon": ["09:00-17:00"]}} | patch
    with pytest.raises(ValidationError, match=message):
        Calendar.model_validate(data)


def test_end_of_day_is_24_00() -> None:
    cal = Calendar.model_validate({"id": "c", "timezone": "UTC", "hours": {"mon": ["20:00-24:00"]}})
    assert is_open(cal, u(2026, 12, 7, 23, 59, 59))
    assert not is_open(cal, u(2026, 12, 8, 0, 0))
    with pytest.raises(ValidationError, match="24:00"):
        Calendar.model_validate({"id": "c", "timezone": "UTC", "hours": {"mon": ["20:00-24:30"]}})


def test_config_calendars_section() -> None:
    data = assignment_config(agents=[agent("a1")], members=["a1"]).model_dump(mode="json", by_alias=True)
    data["calendars"] = [OFFICE.model_dump(mode="json"), OFFICE.model_dump(mode="json")]
    with pytest.raises(ConfigError, match=r"calendars\[1\]: duplicate id 'office'"):
        parse_config(data)
    data["calendars"] = [OFFICE.model_dump(mode="json")]
    cfg = parse_config(data)
    assert cfg.calendars[0] == OFFICE
    # the JSON form (how config versions are stored) reads back the same
    assert parse_config(cfg.model_dump(mode="json", by_alias=True)).calendars == [OFFICE]
