"""The pure parts of the pages: token display states, the live success rate, route shares,
the time-range picker and the language choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokenmanager.tokens.models import Token
from tokenmanager.web.i18n import Locale, pick_language
from tokenmanager.web.views import (
    budget_view,
    live_success_rate,
    parse_window_choice,
    route_shares,
    token_display_state,
)

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


def _token(**changes: Any) -> Token:
    values: dict[str, Any] = {
        "id": 1, "name": "t", "team_id": "team-a", "display_prefix": "ntk_abc", "scopes": (),
        "description": "", "metadata": {}, "created_at": NOW - timedelta(days=90),
        "created_by": "alice", "expires_at": None, "revoked_at": None,
        "last_used": NOW - timedelta(hours=1),
    }  # fmt: skip
    values.update(changes)
    return Token(**values)


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({}, "active"),
        ({"revoked_at": NOW - timedelta(days=1)}, "revoked"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "expired"),
        ({"expires_at": NOW + timedelta(days=6)}, "expiring"),
        ({"expires_at": NOW + timedelta(days=8)}, "active"),
        ({"last_used": NOW - timedelta(days=31)}, "idle"),
        ({"last_used": None}, "idle"),
        ({"last_used": None, "created_at": NOW - timedelta(days=2)}, "active"),
    ],
)
def test_token_display_state(changes: dict[str, Any], state: str) -> None:
    assert token_display_state(_token(**changes), NOW) == state


def _record(minutes_ago: float, status: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": 7, "event_id": "e", "token_hash": "ab" * 32, "route_path": "/r",
        "used_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "response_status": status, "response_time_ms": 10, "failure_kind": None,
        "error_message": None, **extra,
    }  # fmt: skip


def test_live_success_rate_counts_the_last_five_minutes_as_the_rollup_counts_errors() -> None:
    records = [
        _record(0.5, 200),
        _record(1, 404),
        _record(2, None, error_message="refused"),
        _record(3, 200, failure_kind="upstream_reset"),
        _record(4.9, 302),
        _record(5.1, 500),  # older than five minutes: not counted
    ]
    live = live_success_rate(records, NOW)
    assert (live.calls, live.success_rate) == (5, 40.0)
    assert live_success_rate([_record(6, 200)], NOW).success_rate is None


def test_route_shares_are_percentages_of_the_top_five() -> None:
    routes = [{"route_path": f"/r{i}", "call_count": count} for i, count in
              enumerate([50, 30, 10, 5, 5, 99, 0])]  # fmt: skip
    shares = route_shares(routes)
    assert [s["percent"] for s in shares] == [50.0, 30.0, 10.0, 5.0, 5.0]
    assert route_shares([{"route_path": "/r", "call_count": 0}]) == []


def test_window_choice_named_custom_and_bad() -> None:
    assert parse_window_choice(NOW, {"window": "7d"}).window.hours == 7 * 24
    custom = parse_window_choice(NOW, {"since": "2026-11-01", "until": "2026-11-02"})
    assert custom.name == "custom"
    assert (custom.window.since, custom.window.until) == (
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC),
    )  # fmt: skip
    assert custom.bucket == "hour"
    assert parse_window_choice(NOW, {"since": "2025-11-01"}).bucket == "day"
    for params, field in (
        ({"window": "1y"}, "window"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-11-02"}, "since"),
        ({"since": "2026-11-05", "until": "2026-11-01"}, "since"),
    ):
        with pytest.raises(ValueError, match=f"^{field}: "):
            parse_window_choice(NOW, params)


def test_language_choice_and_formats() -> None:
    assert pick_language("zh-TW", "en", "en") == "zh-TW"
    assert pick_language(None, "zh-TW", "en") == "zh-TW"
    assert pick_language("xx", None, "zh-Hant-TW,zh;q=0.9") == "zh-TW"
    assert pick_language(None, None, "zh-CN") == "en"
    assert pick_language(None, None, "") == "en"
    english, chinese = Locale("en"), Locale("zh-TW")
    assert english.number(1234567) == chinese.number(1234567) == "1,234,567"
    assert english.percent(99.456) == "99.5%"
    assert english.ms(850.5) == "850 ms"
    assert chinese.ms(850.5) == "850 毫秒"
    assert english.moment("2026-11-05T15:30:00+00:00") == "Nov 5, 2026 15:30 UTC"
    assert chinese.moment("2026-11-05T15:30:00") == "2026年11月05日 15:30 UTC"
    assert english.weekdays()[0] == "Mon"
    assert chinese.weekdays()[6] == "週日"
    assert english.text("nav_tokens") == "Tokens"
    assert chinese.text("nav_tokens") == "權杖"


START = datetime(2026, 12, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("budget_micro_usd", "spent_pusd", "spent_usd", "percent", "bar"),
    [
        (4_000, 3_517_200_000, "0.0035172", 87, 87),  # 0.0035172 of 0.004: 87.93 -> 87
        (1_000_000, 10**12, "1", 100, 100),
        (1_000_000, 25 * 10**11, "2.5", 250, 100),  # over budget: the bar stops at full
        (2_500_000, 0, "0", 0, 0),
        (0, 1, "0.000000000001", 100, 100),  # a budget of 0 with anything spent is used up
        (0, 0, "0", 0, 0),
    ],
)
def test_budget_view_is_exact_decimal_strings_and_an_integer_percent(
    budget_micro_usd: int, spent_pusd: int, spent_usd: str, percent: int, bar: int
) -> None:
    view = budget_view(budget_micro_usd, "month", spent_pusd, START, END)
    assert view is not None
    assert view["spent_usd"] == spent_usd
    assert (view["percent_spent"], view["bar_percent"]) == (percent, bar)
    assert view["period_start"] == START.isoformat()
    assert view["period_end"] == END.isoformat()
    assert view["budget_period"] == "month"


def test_no_budget_no_bar_and_the_period_defaults_to_month() -> None:
    assert budget_view(None, None, 123, START, END) is None
    view = budget_view(12_500_000, None, 0, START, END)
    assert view is not None
    assert (view["budget_usd"], view["budget_period"]) == ("12.5", "month")
