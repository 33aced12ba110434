"""What the pages show that the services do not compute themselves: a token's display state,
the live success rate from the newest calls, the top-5 route shares, the time-range picker's
window, a budget bar. Pure functions over service results; every figure still comes from the
services."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenmanager.analytics.windows import Window, build_window
from tokenmanager.pricing.money import format_micro_usd, format_usd
from tokenmanager.tokens.models import Token, TokenState
from tokenmanager.usage.events import UsageEvent

EXPIRING_SOON = timedelta(days=7)
IDLE_AFTER = timedelta(days=30)
LIVE_WINDOW = timedelta(minutes=5)
WINDOW_CHOICES = ("24h", "7d", "30d")
PIE_SLICES = 5


def token_display_state(token: Token, now: datetime) -> str:
    """revoked / expired / expiring (within 7 days) / idle (no call in 30 days) / active."""
    state = token.state_at(now)
    if state is TokenState.REVOKED:
        return "revoked"
    if state is TokenState.EXPIRED:
        return "expired"
    if token.expires_at is not None and token.expires_at - now <= EXPIRING_SOON:
        return "expiring"
    if (token.last_used or token.created_at) < now - IDLE_AFTER:
        return "idle"
    return "active"


@dataclass(frozen=True, slots=True)
class LiveRate:
    calls: int
    success_rate: float | None  # None: no call in the live window


def live_success_rate(records: Iterable[Mapping[str, Any]], now: datetime) -> LiveRate:
    """The success rate of the given raw records (newest first, from the analytics service)
    that fall in the last five minutes; errors are counted as the rollup counts them."""
    since = now - LIVE_WINDOW
    calls = errors = 0
    for record in records:
        used_at = datetime.fromisoformat(record["used_at"])
        if used_at.tzinfo is None:
            used_at = used_at.replace(tzinfo=UTC)
        if used_at < since:
            break
        event_fields = {k: v for k, v in record.items() if k in UsageEvent.__dataclass_fields__}
        calls += 1
        errors += UsageEvent.from_json(event_fields).is_error
    if not calls:
        return LiveRate(calls=0, success_rate=None)
    return LiveRate(calls=calls, success_rate=round(100.0 * (calls - errors) / calls, 2))


def route_shares(top_routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The top five routes with their share (percent) of the five's calls, for the pie."""
    slices = [route for route in top_routes[:PIE_SLICES] if route["call_count"] > 0]
    total = sum(route["call_count"] for route in slices)
    return [
        {
            "route_path": route["route_path"] or "(none)",
            "call_count": route["call_count"],
            "percent": round(100.0 * route["call_count"] / total, 1),
        }
        for route in slices
    ]


@dataclass(frozen=True, slots=True)
class WindowChoice:
    """The picker's state: a named window or a custom one, and the window it stands for."""

    name: str  # "24h", "7d", "30d" or "custom"
    window: Window
    since_text: str = ""
    until_text: str = ""

    @property
    def bucket(self) -> str:
        return "hour" if self.window.hours <= 31 * 24 else "day"

    @property
    def filters(self) -> dict[str, str | None]:
        """The picker's fields as the page shows them again."""
        return {
            "window_choice": self.name,
            "window": None if self.name == "custom" else self.name,
            "since": self.since_text,
            "until": self.until_text,
        }


def parse_window_choice(
    now: datetime, params: Mapping[str, str], default: str = "24h"
) -> WindowChoice:
    """The window from `window=` or from `since`/`until` (dates or date-times, UTC);
    ValueError naming the parameter for bad input."""
    since_text = params.get("since", "").strip()
    until_text = params.get("until", "").strip()
    if since_text or until_text:
        since = _parse_moment(since_text, "since") if since_text else None
        until = _parse_moment(until_text, "until", end_of_day=True) if until_text else None
        if since is None:
            raise ValueError("since: give a start for a custom range")
        window = build_window(now, since=since, until=until)
        return WindowChoice("custom", window, since_text, until_text)
    name = params.get("window", default) or default
    if name not in WINDOW_CHOICES:
        raise ValueError(f"window: must be one of {', '.join(WINDOW_CHOICES)}")
    return WindowChoice(name, build_window(now, window=name))


def _parse_moment(text: str, field: str, *, end_of_day: bool = False) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field}: not a date (YYYY-MM-DD) or date-time") from None
    if end_of_day and len(text) == 10:  # a bare date as the end means the whole day
        moment += timedelta(days=1)
    return moment


PICO_PER_MICRO = 10**6


def budget_view(
    budget_micro_usd: int | None,
    budget_period: str | None,
    spent_pusd: int,
    period_start: datetime,
    period_end: datetime,
) -> dict[str, Any] | None:
    """A budget bar: spent and budget as the API's exact decimal strings, the calendar period
    they are for, and the whole percent spent (integer arithmetic, capped at 100 for the bar;
    `percent_spent` itself may exceed 100). None without a budget."""
    if budget_micro_usd is None:
        return None
    budget_pusd = budget_micro_usd * PICO_PER_MICRO
    percent = spent_pusd * 100 // budget_pusd if budget_pusd else (100 if spent_pusd else 0)
    return {
        "budget_usd": format_micro_usd(budget_micro_usd),
        "budget_period": budget_period or "month",
        "spent_usd": format_usd(spent_pusd),
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),
        "percent_spent": percent,
        "bar_percent": min(percent, 100),
    }
