"""A plain-Python oracle for the analytics: every figure recomputed from the list of calls, with
no rollup, no SQL and nothing from `tokenmanager.analytics`. Percentiles are exact (nearest
rank); the service's histogram percentiles are checked to lie within that value's bucket."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tokenmanager.usage.histogram import bucket_bounds

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PERCENTILE_KEYS = {
    "p50_response_time": "0.5",
    "p95_response_time": "0.95",
    "p99_response_time": "0.99",
}


@dataclass(frozen=True)
class Call:
    """One stored call as the oracle knows it: `used_at` is the intended instant, aware UTC."""

    event_id: str
    token_hash: str
    token_id: int | None
    team_id: str | None
    route_path: str | None
    used_at: datetime
    status: int | None
    latency_ms: int | None
    failure_kind: str | None = None
    error_message: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str | None = None
    cost_pusd: int | None = None

    @property
    def is_error(self) -> bool:
        """The product's definition: 4xx, 5xx, a named failure, or no status but a message."""
        if self.failure_kind is not None:
            return True
        if self.status is None:
            return self.error_message is not None
        return self.status >= 400

    @property
    def token_key(self) -> Any:
        """A token's calls under all its hashes are one; each unknown hash is its own."""
        return self.token_id if self.token_id is not None else f"hash:{self.token_hash}"


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def floor_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Scope:
    """Which calls count: `team_ids=None` is everything, unknown tokens included."""

    team_ids: frozenset[str] | None = None
    token_id: int | None = None
    route_path: str | None = None

    def sees(self, call: Call) -> bool:
        if self.team_ids is not None and call.team_id not in self.team_ids:
            return False
        if self.token_id is not None and call.token_id != self.token_id:
            return False
        return self.route_path is None or call.route_path == self.route_path


def select(calls: Iterable[Call], since: datetime, until: datetime, scope: Scope) -> list[Call]:
    return [c for c in calls if since <= c.used_at < until and scope.sees(c)]


@dataclass(frozen=True)
class Figures:
    calls: int
    errors: int
    latencies: tuple[int, ...]
    bytes_in: int
    bytes_out: int

    @property
    def avg_response_time(self) -> float:
        return round(sum(self.latencies) / len(self.latencies), 1) if self.latencies else 0.0

    @property
    def success_rate(self) -> float:
        if not self.calls:
            return 100.0
        return round(100.0 * (self.calls - self.errors) / self.calls, 2)

    @property
    def error_rate(self) -> float:
        return round(100.0 * self.errors / self.calls, 2) if self.calls else 0.0

    @property
    def max_response_time(self) -> int | None:
        return max(self.latencies) if self.latencies else None

    def nearest_rank(self, fraction: str) -> int | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[math.ceil(Fraction(fraction) * len(ordered)) - 1]


def figures_of(calls: Iterable[Call]) -> Figures:
    chosen = list(calls)
    return Figures(
        calls=len(chosen),
        errors=sum(c.is_error for c in chosen),
        latencies=tuple(c.latency_ms for c in chosen if c.latency_ms is not None),
        bytes_in=sum(c.bytes_in or 0 for c in chosen),
        bytes_out=sum(c.bytes_out or 0 for c in chosen),
    )


def error_breakdown(calls: Iterable[Call]) -> dict[str, dict[Any, int]]:
    errors = [c for c in calls if c.is_error]
    return {
        "by_status": dict(Counter(c.status for c in errors)),
        "by_failure_kind": dict(Counter(c.failure_kind for c in errors if c.failure_kind)),
        "top_messages": dict(Counter(c.error_message for c in errors if c.error_message)),
    }


# -- comparing a service's answer with the oracle ---------------------------------------------


def assert_percentile(value: float | None, figures: Figures, fraction: str, where: str) -> None:
    """Within the bounds of the histogram bucket that holds the exact nearest-rank value."""
    exact = figures.nearest_rank(fraction)
    if exact is None:
        assert value is None, where
        return
    lower, upper = bucket_bounds(exact)
    assert value is not None, where
    assert lower <= value <= upper, f"{where}: p{fraction} {value} not in ({lower}, {upper}]"


def assert_latencies(view: dict[str, Any], figures: Figures, where: str) -> None:
    """Every percentile in `view`, and its max when present."""
    for key, fraction in PERCENTILE_KEYS.items():
        if key in view:
            assert_percentile(view[key], figures, fraction, f"{where} {key}")
    if "max_response_time" in view:
        assert view["max_response_time"] == figures.max_response_time, where


def assert_breakdown(view: dict[str, Any], calls: Iterable[Call], where: str) -> None:
    """by_status, by_failure_kind and top_messages hold the oracle's counts, busiest first."""
    expected = error_breakdown(calls)
    for name, key in (
        ("by_status", "status"),
        ("by_failure_kind", "failure_kind"),
        ("top_messages", "message"),
    ):
        entries = view[name]
        counts = [entry["count"] for entry in entries]
        assert counts == sorted(counts, reverse=True), f"{where} {name} order"
        assert {entry[key]: entry["count"] for entry in entries} == expected[name], (
            f"{where} {name}"
        )
        assert len(entries) == len(expected[name]), f"{where} {name} repeats a value"


# -- LLM usage and cost -----------------------------------------------------------------------


def usd(pusd: int) -> str:
    """Pico-dollars as the plain decimal string of USD."""
    return format(Decimal(pusd).scaleb(-12).normalize(), "f")


def llm_figures_of(calls: Iterable[Call], *, with_detail: bool = False) -> dict[str, Any]:
    """Tokens and cost of the LLM calls among `calls`: cost None when none of them had a price
    (there were some), else the priced ones' sum; beside it how many were unknown."""
    llm = [c for c in calls if c.usage_source is not None]
    priced = [c.cost_pusd for c in llm if c.cost_pusd is not None]
    figures: dict[str, Any] = {
        "prompt_tokens": sum(c.prompt_tokens or 0 for c in llm),
        "completion_tokens": sum(c.completion_tokens or 0 for c in llm),
        "cost_usd": None if llm and not priced else usd(sum(priced)),
        "unpriced_calls": len(llm) - len(priced),
        "estimated_calls": sum(c.usage_source == "estimated" for c in llm),
        "missing_calls": sum(c.usage_source == "missing" for c in llm),
    }
    if with_detail:
        figures["calls"] = len(llm)
        figures["cached_prompt_tokens"] = sum(c.cached_prompt_tokens or 0 for c in llm)
        figures["reasoning_tokens"] = sum(c.reasoning_tokens or 0 for c in llm)
    else:
        figures["llm_calls"] = len(llm)
    return figures


def assert_llm_figures(view: dict[str, Any], calls: Iterable[Call], where: str) -> None:
    expected = llm_figures_of(calls)
    assert {key: view[key] for key in expected} == expected, where


def costs_by(calls: Iterable[Call], group_by: str) -> dict[Any, list[Call]]:
    """LLM calls grouped as /api/usage/costs groups them (the team charged at call time)."""
    key_of = {
        "model": lambda c: c.model,
        "team": lambda c: c.team_id,
        "token": lambda c: c.token_id,
        "route": lambda c: c.route_path,
    }[group_by]
    groups: dict[Any, list[Call]] = defaultdict(list)
    for call in calls:
        if call.usage_source is not None:
            groups[key_of(call)].append(call)
    return dict(groups)
