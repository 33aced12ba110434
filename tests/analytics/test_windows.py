"""Analytics windows: whole UTC hours, [since, until), and the split of a long window into whole
days (daily rollup) and hourly edges, checked against hand-computed bounds and a brute-force
walk over every hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.analytics.windows import (
    Window,
    build_window,
    day_starts,
    hour_starts,
    split_by_day,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NOW = datetime(2030, 3, 10, 14, 25, 37, 123456, tzinfo=UTC)
END_OF_NOW_HOUR = datetime(2030, 3, 10, 15, 0, tzinfo=UTC)
INDIA = timezone(timedelta(hours=5, minutes=30))
PACIFIC = timezone(timedelta(hours=-8))


# -- named windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "span"),
    [("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30))],
)
def test_named_window_ends_at_the_end_of_the_current_hour(name: str, span: timedelta) -> None:
    window = build_window(NOW, window=name)
    assert window == Window(END_OF_NOW_HOUR - span, END_OF_NOW_HOUR)
    assert window.hours == span / HOUR


def test_named_window_at_an_exact_hour_still_counts_that_hour() -> None:
    on_the_hour = datetime(2030, 3, 10, 14, 0, tzinfo=UTC)
    window = build_window(on_the_hour, window="24h")
    assert window.until == datetime(2030, 3, 10, 15, 0, tzinfo=UTC)
    assert window.since == datetime(2030, 3, 9, 15, 0, tzinfo=UTC)


def test_no_window_and_no_bounds_uses_the_default() -> None:
    assert build_window(NOW) == build_window(NOW, window="24h")
    assert build_window(NOW, default="7d") == build_window(NOW, window="7d")


def test_until_alone_ends_the_default_window_there() -> None:
    until = datetime(2030, 3, 5, 8, 10, tzinfo=UTC)
    window = build_window(NOW, until=until)
    assert window == Window(
        datetime(2030, 3, 4, 9, 0, tzinfo=UTC), datetime(2030, 3, 5, 9, tzinfo=UTC)
    )


# -- explicit bounds -------------------------------------------------------------------------


def test_since_and_until_are_widened_to_whole_hours() -> None:
    window = build_window(
        NOW,
        since=datetime(2030, 3, 1, 10, 59, 59, tzinfo=UTC),
        until=datetime(2030, 3, 2, 3, 0, 0, 1, tzinfo=UTC),
    )
    assert window == Window(
        datetime(2030, 3, 1, 10, 0, tzinfo=UTC), datetime(2030, 3, 2, 4, 0, tzinfo=UTC)
    )


def test_bounds_on_whole_hours_are_kept_as_they_are() -> None:
    since = datetime(2030, 3, 1, 10, 0, tzinfo=UTC)
    until = datetime(2030, 3, 1, 13, 0, tzinfo=UTC)
    assert build_window(NOW, since=since, until=until) == Window(since, until)


def test_since_alone_runs_to_the_end_of_the_current_hour() -> None:
    window = build_window(NOW, since=datetime(2030, 3, 8, 0, 30, tzinfo=UTC))
    assert window == Window(datetime(2030, 3, 8, 0, 0, tzinfo=UTC), END_OF_NOW_HOUR)


def test_naive_bounds_are_taken_as_utc() -> None:
    naive = build_window(
        NOW, since=datetime(2030, 3, 1, 10, 15), until=datetime(2030, 3, 1, 12, 45)
    )
    aware = build_window(
        NOW,
        since=datetime(2030, 3, 1, 10, 15, tzinfo=UTC),
        until=datetime(2030, 3, 1, 12, 45, tzinfo=UTC),
    )
    assert naive == aware
    assert naive.since.utcoffset() == timedelta(0)
    assert naive.until.utcoffset() == timedelta(0)


def test_naive_since_alone_is_taken_as_utc() -> None:
    window = build_window(NOW, since=datetime(2030, 3, 10, 1, 15))
    assert window == Window(datetime(2030, 3, 10, 1, 0, tzinfo=UTC), END_OF_NOW_HOUR)


@pytest.mark.parametrize("zone", [INDIA, PACIFIC], ids=["+05:30", "-08:00"])
def test_aware_bounds_in_another_zone_are_widened_to_whole_utc_hours(zone: timezone) -> None:
    # 10:15+05:30 is 04:45 UTC: the window starts at 04:00 UTC, the rollup's hour, not 04:30.
    since = datetime(2030, 3, 1, 4, 45, tzinfo=UTC).astimezone(zone)
    until = datetime(2030, 3, 2, 1, 5, tzinfo=UTC).astimezone(zone)
    window = build_window(NOW, since=since, until=until)
    assert window.since == datetime(2030, 3, 1, 4, 0, tzinfo=UTC)
    assert window.until == datetime(2030, 3, 2, 2, 0, tzinfo=UTC)
    for bound in (window.since, window.until):
        assert bound.utcoffset() == timedelta(0)
        assert (bound.minute, bound.second, bound.microsecond) == (0, 0, 0)
    # Under a day and over one UTC midnight: no whole UTC day, so all of it is hourly.
    assert split_by_day(window) == (None, [window])


# -- errors ----------------------------------------------------------------------------------


def test_since_equal_to_until_is_refused_naming_since() -> None:
    moment = datetime(2030, 3, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"^since:"):
        build_window(NOW, since=moment, until=moment)


def test_since_after_until_is_refused_naming_since() -> None:
    with pytest.raises(ValueError, match=r"^since:"):
        build_window(
            NOW,
            since=datetime(2030, 3, 2, tzinfo=UTC),
            until=datetime(2030, 3, 1, tzinfo=UTC),
        )


def test_since_within_the_same_hour_as_until_is_a_one_hour_window() -> None:
    window = build_window(
        NOW,
        since=datetime(2030, 3, 1, 10, 10, tzinfo=UTC),
        until=datetime(2030, 3, 1, 10, 20, tzinfo=UTC),
    )
    assert window == Window(
        datetime(2030, 3, 1, 10, tzinfo=UTC), datetime(2030, 3, 1, 11, tzinfo=UTC)
    )


def test_since_after_now_without_until_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^since:"):
        build_window(NOW, since=NOW + DAY)


@pytest.mark.parametrize("name", ["1h", "24H", "90d", "week"])
def test_unknown_window_is_refused_naming_window(name: str) -> None:
    with pytest.raises(ValueError, match=r"^window:"):
        build_window(NOW, window=name)


@pytest.mark.parametrize(
    "bounds",
    [
        {"since": datetime(2030, 3, 1, tzinfo=UTC)},
        {"until": datetime(2030, 3, 1, tzinfo=UTC)},
        {"since": datetime(2030, 3, 1, tzinfo=UTC), "until": datetime(2030, 3, 2, tzinfo=UTC)},
    ],
    ids=["since", "until", "both"],
)
def test_window_together_with_explicit_bounds_is_refused(bounds: dict[str, datetime]) -> None:
    with pytest.raises(ValueError, match=r"^window:"):
        build_window(NOW, window="24h", since=bounds.get("since"), until=bounds.get("until"))


def test_span_of_exactly_400_days_is_allowed() -> None:
    until = datetime(2030, 3, 1, tzinfo=UTC)
    window = build_window(NOW, since=until - timedelta(days=400), until=until)
    assert window.until - window.since == timedelta(days=400)


def test_span_over_400_days_is_refused() -> None:
    until = datetime(2030, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="400 days"):
        build_window(NOW, since=until - timedelta(days=400, hours=1), until=until)


def test_span_just_over_400_days_by_widening_is_refused() -> None:
    # 400 days exactly as given, but widening `until` to the next hour makes it longer.
    since = datetime(2029, 1, 1, 0, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="400 days"):
        build_window(NOW, since=since, until=since + timedelta(days=400, minutes=1))


# -- split_by_day ----------------------------------------------------------------------------


def test_window_within_one_day_is_all_hourly() -> None:
    window = Window(datetime(2030, 3, 1, 3, tzinfo=UTC), datetime(2030, 3, 1, 20, tzinfo=UTC))
    assert split_by_day(window) == (None, [window])


def test_window_of_one_whole_day_is_all_daily() -> None:
    window = Window(datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 3, 2, tzinfo=UTC))
    assert split_by_day(window) == ((window.since, window.until), [])


def test_window_crossing_one_midnight_without_a_whole_day_is_all_hourly() -> None:
    window = Window(datetime(2030, 3, 1, 20, tzinfo=UTC), datetime(2030, 3, 2, 5, tzinfo=UTC))
    assert split_by_day(window) == (None, [window])


def test_window_with_whole_days_inside_has_an_edge_at_each_end() -> None:
    window = Window(datetime(2030, 3, 1, 20, tzinfo=UTC), datetime(2030, 3, 4, 5, tzinfo=UTC))
    days, edges = split_by_day(window)
    assert days == (datetime(2030, 3, 2, tzinfo=UTC), datetime(2030, 3, 4, tzinfo=UTC))
    assert edges == [
        Window(datetime(2030, 3, 1, 20, tzinfo=UTC), datetime(2030, 3, 2, tzinfo=UTC)),
        Window(datetime(2030, 3, 4, tzinfo=UTC), datetime(2030, 3, 4, 5, tzinfo=UTC)),
    ]


def _covered_hours(window: Window) -> list[datetime]:
    """Each hour the split reads, once per part that reads it."""
    days, edges = split_by_day(window)
    hours = []
    for edge in edges:
        moment = edge.since
        while moment < edge.until:
            hours.append(moment)
            moment += HOUR
    if days is not None:
        moment = days[0]
        while moment < days[1]:
            hours.append(moment)
            moment += HOUR
    return hours


hour_offsets = st.integers(min_value=0, max_value=60 * 24)


@given(start=hour_offsets, length=st.integers(min_value=1, max_value=24 * 40))
def test_split_by_day_covers_the_window_exactly_once(start: int, length: int) -> None:
    since = datetime(2030, 1, 1, tzinfo=UTC) + start * HOUR
    window = Window(since, since + length * HOUR)
    every_hour = [since + index * HOUR for index in range(length)]

    days, edges = split_by_day(window)

    assert sorted(_covered_hours(window)) == every_hour
    if days is not None:
        assert days[0] < days[1]
        for bound in days:
            assert (bound.hour, bound.minute, bound.second) == (0, 0, 0)
            assert window.since <= bound <= window.until
    if days is None:
        assert edges == [window]
    else:
        # The edges are the partial days before and after the whole ones.
        assert len(edges) <= 2
        for edge in edges:
            assert edge.since < edge.until
            assert edge.until - edge.since < DAY
    # Whole days are read from the daily rollup whenever the window holds one.
    first_midnight = (since + DAY - HOUR).replace(hour=0)
    has_whole_day = first_midnight + DAY <= window.until
    assert (days is not None) == has_whole_day


@given(start=hour_offsets, length=st.integers(min_value=1, max_value=24 * 40))
def test_hour_and_day_starts_list_every_period_of_the_window(start: int, length: int) -> None:
    since = datetime(2030, 1, 1, tzinfo=UTC) + start * HOUR
    window = Window(since, since + length * HOUR)
    assert hour_starts(window) == [since + index * HOUR for index in range(length)]
    expected_days = sorted({moment.replace(hour=0) for moment in hour_starts(window)})
    assert day_starts(window) == expected_days
