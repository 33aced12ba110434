"""Calendar periods (local days and months in the configured zone) as UTC instants. Pure.

Budgets and spend are cut in TOKENMANAGER_TIMEZONE while storage stays UTC: a period is the
UTC instant of its local start and the UTC instant of the next period's local start, so a day
across a DST change lasts 23 or 25 hours and a +05:30 day starts at 18:30 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
UTC_ZONE = ZoneInfo("UTC")


def _local_midnight(year: int, month: int, day: int, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the local date starts: the earlier one when midnight happens
    twice (clocks set back to 00:00), and the end of the gap when a DST jump skips it."""
    naive = datetime(year, month, day)  # noqa: DTZ001 - a local wall time, zoned below
    candidates = [naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    # A skipped wall time converts with one of the two offsets to an instant of the day
    # before: keep only instants that are on or after the local midnight.
    valid = [c for c in candidates if c.astimezone(zone).replace(tzinfo=None) >= naive]
    return min(valid)


def period_bounds(period: str, at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local calendar `period` ("day" or "month") containing `at`, as UTC [start, end).

    `at` must be aware (a naive value is taken as UTC, as the database stores them).
    ValueError for an unknown period.
    """
    moment = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    local = moment.astimezone(zone)
    if period == "day":
        start = _local_midnight(local.year, local.month, local.day, zone)
        following = local.date() + timedelta(days=1)
        end = _local_midnight(following.year, following.month, following.day, zone)
    elif period == "month":
        start = _local_midnight(local.year, local.month, 1, zone)
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        end = _local_midnight(year, month, 1, zone)
    else:
        raise ValueError(f"unknown period {period!r}: day or month")
    return start, end


def period_start(period: str, at: datetime, zone: ZoneInfo) -> datetime:
    """The UTC start of the local `period` containing `at`."""
    return period_bounds(period, at, zone)[0]


def local_day_starts(since: datetime, until: datetime, zone: ZoneInfo) -> list[datetime]:
    """UTC starts of the local days overlapping [since, until), oldest first."""
    starts: list[datetime] = []
    start, end = period_bounds("day", since, zone)
    while start < until:
        starts.append(start)
        start, end = end, period_bounds("day", end, zone)[1]
    return starts
