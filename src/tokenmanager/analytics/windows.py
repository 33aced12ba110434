"""Time windows for analytics, aligned to whole hours (the rollup's grain). Pure.

A window is [since, until). `window=24h` ends at the end of the current hour, so the hour in
progress counts. Explicit `since` / `until` are widened to whole hours. Long windows are read
from the daily rollup for their whole days and from the hourly rollup for the hours at either
edge (`split_by_day`), which gives the same sums with far fewer rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tokenmanager.usage.rollup import day_of, hour_of

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_SPAN = timedelta(days=400)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime

    @property
    def hours(self) -> int:
        return int((self.until - self.since) / HOUR)


def build_window(
    now: datetime,
    *,
    window: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    default: str = "24h",
) -> Window:
    """ValueError (naming the parameter) for an unknown window, since >= until, or a span longer
    than MAX_SPAN. `window` and explicit bounds cannot be combined. Naive bounds are UTC; the
    window's bounds are always aware UTC."""
    if window is not None and (since is not None or until is not None):
        raise ValueError("window: give either window or since/until, not both")
    now = _as_utc(now)
    since = _as_utc(since) if since is not None else None
    until = _as_utc(until) if until is not None else None
    end = _ceil_hour(until) if until is not None else hour_of(now) + HOUR
    if since is not None:
        start = hour_of(since)
    else:
        span = WINDOWS.get(window or default)
        if span is None:
            raise ValueError(f"window: must be one of {', '.join(WINDOWS)}")
        start = end - span
    if start >= end:
        raise ValueError("since: must be before until")
    if end - start > MAX_SPAN:
        raise ValueError(f"since: the window may span at most {MAX_SPAN.days} days")
    return Window(start, end)


def _as_utc(moment: datetime) -> datetime:
    """UTC, so that whole hours and days are the rollup's (a +05:30 hour starts at :30 UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ceil_hour(moment: datetime) -> datetime:
    floor = hour_of(moment)
    return floor if floor == moment else floor + HOUR


def split_by_day(window: Window) -> tuple[tuple[datetime, datetime] | None, list[Window]]:
    """(whole days [d0, d1) for the daily rollup or None, hourly windows for the edges)."""
    first_day = day_of(window.since)
    if first_day < window.since:
        first_day += DAY
    last_day = day_of(window.until)
    if first_day >= last_day:
        return None, [window]
    edges = [
        Window(start, end)
        for start, end in ((window.since, first_day), (last_day, window.until))
        if start < end
    ]
    return (first_day, last_day), edges


def hour_starts(window: Window) -> list[datetime]:
    return [window.since + HOUR * index for index in range(window.hours)]


def day_starts(window: Window) -> list[datetime]:
    start = day_of(window.since)
    days = []
    while start < window.until:
        days.append(start)
        start += DAY
    return days
