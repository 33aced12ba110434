"""Local calendar periods as UTC instants, across DST changes and half-hour zones."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tokenmanager.calendar import local_day_starts, period_bounds

PARIS = ZoneInfo("Europe/Paris")
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30, no DST
SHANGHAI = ZoneInfo("Asia/Shanghai")  # +08:00
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_utc_day_and_month_are_the_calendar_ones() -> None:
    zone = ZoneInfo("UTC")
    assert period_bounds("day", utc(2026, 3, 5, 13, 7), zone) == (utc(2026, 3, 5), utc(2026, 3, 6))
    assert period_bounds("month", utc(2026, 12, 31, 23, 59), zone) == (
        utc(2026, 12, 1),
        utc(2027, 1, 1),
    )


def test_a_kolkata_day_starts_at_1830_utc_the_day_before() -> None:
    start, end = period_bounds("day", utc(2026, 3, 5, 18, 29), KOLKATA)
    assert (start, end) == (utc(2026, 3, 4, 18, 30), utc(2026, 3, 5, 18, 30))
    # One minute later it is already the next local day.
    assert period_bounds("day", utc(2026, 3, 5, 18, 30), KOLKATA)[0] == utc(2026, 3, 5, 18, 30)


def test_a_shanghai_month_starts_at_1600_utc_on_the_last_day_before() -> None:
    start, end = period_bounds("month", utc(2026, 1, 31, 16, 0), SHANGHAI)
    assert (start, end) == (utc(2026, 1, 31, 16), utc(2026, 2, 28, 16))
    assert period_bounds("month", utc(2026, 1, 31, 15, 59), SHANGHAI) == (
        utc(2025, 12, 31, 16),
        utc(2026, 1, 31, 16),
    )


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (PARIS, datetime(2026, 3, 29, 12), 23),  # clocks forward at 02:00
        (PARIS, datetime(2026, 10, 25, 12), 25),  # clocks back at 03:00
        (NEW_YORK, datetime(2026, 3, 8, 12), 23),
        (NEW_YORK, datetime(2026, 11, 1, 12), 25),
        (PARIS, datetime(2026, 7, 14, 12), 24),
    ],
)
def test_dst_days_last_23_or_25_hours(zone: ZoneInfo, day: datetime, hours: int) -> None:
    at = day.replace(tzinfo=zone)
    start, end = period_bounds("day", at, zone)
    assert end - start == timedelta(hours=hours)
    assert start.astimezone(zone).replace(tzinfo=None) == datetime(day.year, day.month, day.day)
    assert start <= at < end


def test_paris_march_lasts_one_hour_less_than_31_days() -> None:
    start, end = period_bounds("month", utc(2026, 3, 15), PARIS)
    assert start == utc(2026, 2, 28, 23)
    assert end == utc(2026, 3, 31, 22)
    assert end - start == timedelta(days=31, hours=-1)


def test_a_skipped_local_midnight_starts_the_day_at_the_gap_end() -> None:
    # America/Santiago moved clocks from 00:00 to 01:00 on 2026-09-06.
    zone = ZoneInfo("America/Santiago")
    start, end = period_bounds("day", utc(2026, 9, 6, 12), zone)
    assert start.astimezone(zone).replace(tzinfo=None) == datetime(2026, 9, 6, 1)
    assert end - start == timedelta(hours=23)


def test_naive_moments_are_utc_and_periods_are_checked() -> None:
    assert period_bounds("day", datetime(2026, 3, 5, 20), KOLKATA)[0] == utc(2026, 3, 5, 18, 30)
    with pytest.raises(ValueError, match="unknown period"):
        period_bounds("week", utc(2026, 3, 5), PARIS)


def test_every_instant_falls_in_exactly_one_day_and_days_tile() -> None:
    starts = local_day_starts(utc(2026, 10, 23), utc(2026, 10, 28), PARIS)
    assert len(starts) == 6
    for first, second in itertools.pairwise(starts):
        assert period_bounds("day", first, PARIS) == (first, second)
    moment = utc(2026, 10, 23)
    while moment < utc(2026, 10, 28):
        start, end = period_bounds("day", moment, PARIS)
        assert start <= moment < end
        moment += timedelta(minutes=37)
