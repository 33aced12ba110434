"""Every analytics figure equals a plain-Python oracle over the same events, on SQLite and
PostgreSQL: hypothesis generates events across hour and day boundaries (aware, naive, offset
and epoch timestamps), statuses and failures, missing latencies and routes, tokens of two teams
(rotated, revoked, expired, idle) and unknown hashes, inserted in batches with replays. Each
example gets a fresh database and a fixed clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tokenmanager.analytics.windows import Window, build_window
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError, NotFoundError

from .cases import (
    ADMIN,
    NOW,
    REGRESSION_BOUNDS,
    REGRESSION_CASE,
    ROUTES,
    SETUP_AT,
    TEAM_A,
    TEAM_B,
    VIEWER_A,
    Case,
    FreshServices,
    Loaded,
    load,
    usage_cases,
)
from .oracle import (
    DAY,
    HOUR,
    Call,
    Scope,
    assert_breakdown,
    assert_latencies,
    assert_llm_figures,
    assert_percentile,
    ceil_hour,
    costs_by,
    figures_of,
    floor_day,
    floor_hour,
    llm_figures_of,
    select,
    usd,
)

MAX_HOURLY_POINTS = 31 * 24
NAMED_SPANS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# An example costs a second or more (tokens, inserts, dozens of service calls): shrinking a
# failure would outlast the test timeout, so a failing example is reported as generated.
EXAMPLES = settings(
    max_examples=15,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Check = Callable[[Services, Loaded, list[Window]], Awaitable[None]]


@st.composite
def explicit_bounds(draw: st.DrawFn) -> tuple[datetime, datetime]:
    """since/until as an API caller might give them: any minute, naive (UTC) or in a zone."""
    since = NOW - timedelta(minutes=draw(st.integers(min_value=0, max_value=46 * 1440)))
    until = since + timedelta(minutes=draw(st.integers(min_value=1, max_value=45 * 1440)))
    zone = draw(st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))]))
    if zone is None:
        return since.replace(tzinfo=None), until.replace(tzinfo=None)
    return since.astimezone(zone), until.astimezone(zone)


def oracle_windows(bounds: tuple[datetime, datetime]) -> list[Window]:
    """The named windows and the explicit one, computed by hand and checked against
    build_window."""
    end = floor_hour(NOW) + HOUR
    windows = []
    for name, span in NAMED_SPANS.items():
        expected = Window(end - span, end)
        assert build_window(NOW, window=name) == expected
        windows.append(expected)
    since, until = (
        m.replace(tzinfo=UTC) if m.tzinfo is None else m.astimezone(UTC) for m in bounds
    )
    expected = Window(floor_hour(since), ceil_hour(until))
    assert build_window(NOW, since=bounds[0], until=bounds[1]) == expected
    windows.append(expected)
    return windows


def run_example(
    fresh_services: FreshServices, case: Case, bounds: tuple[datetime, datetime], check: Check
) -> None:
    windows = oracle_windows(bounds)

    async def body() -> None:
        async with fresh_services() as services:
            loaded = await load(services, case, traveller)
            await check(services, loaded, windows)

    with time_machine.travel(SETUP_AT, tick=False) as traveller:
        asyncio.run(body())


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def hour_starts(window: Window) -> list[datetime]:
    starts = []
    moment = window.since
    while moment < window.until:
        starts.append(moment)
        moment += HOUR
    return starts


def day_starts(window: Window) -> list[datetime]:
    starts = []
    moment = floor_day(window.since)
    while moment < window.until:
        starts.append(moment)
        moment += DAY
    return starts


# -- shared comparisons ----------------------------------------------------------------------


def assert_series(
    points: list[dict[str, Any]], chosen: list[Call], window: Window, bucket: str
) -> None:
    """One point per hour (or day) of the window, zeros included, oldest first."""
    starts = hour_starts(window) if bucket == "hour" else day_starts(window)
    assert [point["hour"] for point in points] == [iso(start) for start in starts]
    fold = floor_hour if bucket == "hour" else floor_day
    for point, start in zip(points, starts, strict=True):
        figures = figures_of(c for c in chosen if fold(c.used_at) == start)
        where = f"{bucket} {start}"
        assert point["call_count"] == figures.calls, where
        assert point["error_count"] == figures.errors, where
        assert point["avg_response_time"] == figures.avg_response_time, where
        assert_latencies(point, figures, where)


def assert_token_entries(entries: list[dict[str, Any]], chosen: list[Call], loaded: Loaded) -> None:
    """Top tokens / token distribution: one entry per token (all its hashes), one per unknown
    hash, busiest first."""
    by_key: dict[Any, list[Call]] = {}
    for call in chosen:
        by_key.setdefault(call.token_key, []).append(call)
    expected = {}
    for calls in by_key.values():
        figures = figures_of(calls)
        token_id = calls[0].token_id
        info = loaded.tokens.get(token_id) if token_id is not None else None
        expected[(token_id, None if info else calls[0].token_hash[:8])] = {
            "name": info.name if info else "unknown token",
            "team_id": info.team_id if info else None,
            "usage_count": figures.calls,
            "error_count": figures.errors,
            "avg_response_time": figures.avg_response_time,
            "success_rate": figures.success_rate,
        }
    actual = {
        (entry["token_id"], entry["token_hash_prefix"]): {
            name: entry[name]
            for name in (
                "name",
                "team_id",
                "usage_count",
                "error_count",
                "avg_response_time",
                "success_rate",
            )
        }
        for entry in entries
    }
    assert len(actual) == len(entries), "a token appears twice"
    assert actual == expected
    counts = [entry["usage_count"] for entry in entries]
    assert counts == sorted(counts, reverse=True)


def assert_route_entries(entries: list[dict[str, Any]], chosen: list[Call], *, limit: int) -> None:
    routes = {c.route_path for c in chosen}
    assert len(routes) <= limit  # the cases use fewer routes than any top list holds
    actual = {entry["route_path"]: entry for entry in entries}
    assert len(actual) == len(entries), "a route appears twice"
    assert set(actual) == routes
    for route, entry in actual.items():
        figures = figures_of(c for c in chosen if c.route_path == route)
        assert entry["call_count"] == figures.calls, route
        assert entry["error_count"] == figures.errors, route
        assert entry["avg_response_time"] == figures.avg_response_time, route
        assert entry["success_rate"] == figures.success_rate, route
        assert_percentile(entry["p95_response_time"], figures, "0.95", f"route {route}")
    counts = [entry["call_count"] for entry in entries]
    assert counts == sorted(counts, reverse=True)


def assert_totals(stats: dict[str, Any], chosen: list[Call], names: dict[str, str]) -> None:
    """`names` maps the oracle's figure to the answer's key for it."""
    figures = figures_of(chosen)
    for figure, key in names.items():
        assert stats[key] == getattr(figures, figure), key
    assert_latencies(stats, figures, "totals")


# -- /api/usage/stats ------------------------------------------------------------------------

STATS_SCOPES = (
    (ADMIN, None, Scope()),
    (VIEWER_A, None, Scope(team_ids=frozenset({TEAM_A}))),
    (ADMIN, TEAM_B, Scope(team_ids=frozenset({TEAM_B}))),
)


async def check_stats(services: Services, loaded: Loaded, windows: list[Window]) -> None:
    for number, window in enumerate(windows):
        # Every window for admins; the 30-day and the explicit one for each scope.
        for actor, team_id, scope in STATS_SCOPES if number >= 2 else STATS_SCOPES[:1]:
            chosen = select(loaded.calls, window.since, window.until, scope)
            for bucket in ("hour", "day"):
                where = f"{actor.name} team={team_id} {window} {bucket}"
                if bucket == "hour" and window.hours > MAX_HOURLY_POINTS:
                    with pytest.raises(InvalidInputError):
                        await services.analytics.stats(
                            actor, window, bucket=bucket, team_id=team_id
                        )
                    continue
                answer = await services.analytics.stats(
                    actor, window, bucket=bucket, team_id=team_id
                )
                assert answer["window"] == {
                    "since": iso(window.since),
                    "until": iso(window.until),
                    "bucket": bucket,
                }
                overview = answer["overview"]
                assert_totals(
                    overview,
                    chosen,
                    {
                        "calls": "total_calls",
                        "errors": "total_errors",
                        "avg_response_time": "avg_response_time",
                        "success_rate": "success_rate",
                        "error_rate": "error_rate",
                        "bytes_in": "bytes_in",
                        "bytes_out": "bytes_out",
                    },
                )
                assert_llm_figures(overview, chosen, where)
                used_ids = {c.token_id for c in chosen if c.token_id is not None}
                assert overview["unique_tokens"] == len({c.token_key for c in chosen}), where
                assert overview["active_tokens"] == len(used_ids), where
                active = {
                    info.token_id
                    for info in loaded.tokens.values()
                    if info.is_active and (scope.team_ids is None or info.team_id in scope.team_ids)
                }
                assert overview["idle_tokens"] == len(active - used_ids), where
                assert_series(answer["hourly_usage"], chosen, window, bucket)
                assert_token_entries(answer["top_tokens"], chosen, loaded)
                assert_route_entries(answer["top_routes"], chosen, limit=10)


@EXAMPLES
@given(case=usage_cases(), bounds=explicit_bounds())
@example(case=REGRESSION_CASE, bounds=REGRESSION_BOUNDS)
def test_stats_equal_the_oracle_for_admins_viewers_and_one_team(
    fresh_services: FreshServices, case: Case, bounds: tuple[datetime, datetime]
) -> None:
    run_example(fresh_services, case, bounds, check_stats)


# -- /api/usage/token/{id} -------------------------------------------------------------------


async def check_token_usage(services: Services, loaded: Loaded, windows: list[Window]) -> None:
    for window in windows[2:]:  # 30d and the explicit window
        for info in loaded.tokens.values():
            where = f"token {info.name} {window}"
            own = [c for c in loaded.calls if c.token_id == info.token_id]
            chosen = select(own, window.since, window.until, Scope())
            answer = await services.analytics.token_usage(
                ADMIN, info.token_id, window, limit=100, offset=0
            )
            assert answer["token"]["id"] == info.token_id
            assert answer["token"]["team_id"] == info.team_id
            stats = answer["stats"]
            assert_totals(
                stats,
                chosen,
                {
                    "calls": "total_calls",
                    "errors": "error_count",
                    "avg_response_time": "avg_response_time",
                    "error_rate": "error_rate",
                    "success_rate": "success_rate",
                },
            )
            assert_llm_figures(stats, chosen, where)
            # Each recent call with its model, counts, cost and where the counts came from.
            assert len(own) <= 100
            assert Counter(
                (e["model"], e["prompt_tokens"], e["completion_tokens"], e["cost_usd"],
                 e["usage_source"])
                for e in answer["recent_usage"]
            ) == Counter(
                (c.model, c.prompt_tokens, c.completion_tokens,
                 None if c.cost_pusd is None else usd(c.cost_pusd), c.usage_source)
                for c in own
            ), where  # fmt: skip
            # First and last use are over all of the token's calls, not just the window's.
            moments = sorted(c.used_at for c in own)
            assert stats["first_used"] == iso(moments[0] if moments else None), where
            assert stats["last_used"] == iso(moments[-1] if moments else None), where
            assert [e["used_at"] for e in answer["recent_usage"]] == [
                iso(m) for m in sorted(moments, reverse=True)[:100]
            ], where
            assert {e["token_id"] for e in answer["recent_usage"]} <= {info.token_id}
            assert_route_entries(answer["route_distribution"], chosen, limit=len(ROUTES) + 1)
            matrix = [[0] * 24 for _ in range(7)]
            for call in chosen:
                matrix[call.used_at.weekday()][call.used_at.hour] += 1
            assert answer["time_profile"]["calls"] == matrix, where
            assert_breakdown(answer["errors"], chosen, where)

            if window != windows[-1]:
                continue
            if info.team_id == TEAM_A:
                seen = await services.analytics.token_usage(
                    VIEWER_A, info.token_id, window, limit=100, offset=0
                )
                assert seen["stats"] == stats
            else:
                with pytest.raises(NotFoundError):
                    await services.analytics.token_usage(
                        VIEWER_A, info.token_id, window, limit=100, offset=0
                    )


@EXAMPLES
@given(case=usage_cases(), bounds=explicit_bounds())
@example(case=REGRESSION_CASE, bounds=REGRESSION_BOUNDS)
def test_token_usage_equals_the_oracle_for_every_token_including_rotated_and_revoked(
    fresh_services: FreshServices, case: Case, bounds: tuple[datetime, datetime]
) -> None:
    run_example(fresh_services, case, bounds, check_token_usage)


# -- /api/usage/route ------------------------------------------------------------------------

ROUTE_SCOPES = (
    (ADMIN, None, Scope()),
    (VIEWER_A, None, Scope(team_ids=frozenset({TEAM_A}))),
    (ADMIN, TEAM_A, Scope(team_ids=frozenset({TEAM_A}))),
)


async def check_route_usage(services: Services, loaded: Loaded, windows: list[Window]) -> None:
    for window in windows[2:]:
        for route in ROUTES:
            for actor, team_id, team_scope in ROUTE_SCOPES:
                scope = Scope(team_ids=team_scope.team_ids, route_path=route)
                where = f"route {route} {actor.name} team={team_id} {window}"
                chosen = select(loaded.calls, window.since, window.until, scope)
                answer = await services.analytics.route_usage(actor, route, window, team_id=team_id)
                assert_totals(
                    answer["stats"],
                    chosen,
                    {
                        "calls": "total_calls",
                        "errors": "error_count",
                        "error_rate": "error_rate",
                        "success_rate": "success_rate",
                        "avg_response_time": "avg_response_time",
                    },
                )
                assert_llm_figures(answer["stats"], chosen, where)
                assert_token_entries(answer["token_distribution"], chosen, loaded)
                trend_bucket = "hour" if window.hours <= MAX_HOURLY_POINTS else "day"
                assert_series(answer["latency_trend"], chosen, window, trend_bucket)
                assert_breakdown(answer["errors"], chosen, where)


@EXAMPLES
@given(case=usage_cases(), bounds=explicit_bounds())
@example(case=REGRESSION_CASE, bounds=REGRESSION_BOUNDS)
def test_route_usage_equals_the_oracle_for_every_route_and_scope(
    fresh_services: FreshServices, case: Case, bounds: tuple[datetime, datetime]
) -> None:
    run_example(fresh_services, case, bounds, check_route_usage)


# -- /api/usage/errors -----------------------------------------------------------------------


async def check_errors(services: Services, loaded: Loaded, windows: list[Window]) -> None:
    for window in windows:
        # Each token's errors over the explicit window; the other filters over every window.
        token_ids = sorted(loaded.tokens) if window == windows[-1] else []
        filters: list[tuple[Any, dict[str, Any], Scope]] = [
            (ADMIN, {}, Scope()),
            (VIEWER_A, {}, Scope(team_ids=frozenset({TEAM_A}))),
            (ADMIN, {"team_id": TEAM_B}, Scope(team_ids=frozenset({TEAM_B}))),
            (ADMIN, {"route_path": ROUTES[0]}, Scope(route_path=ROUTES[0])),
            *((ADMIN, {"token_id": token_id}, Scope(token_id=token_id)) for token_id in token_ids),
        ]
        for actor, given_filter, scope in filters:
            where = f"errors {actor.name} {given_filter} {window}"
            chosen = select(loaded.calls, window.since, window.until, scope)
            answer = await services.analytics.errors(actor, window, limit=50, **given_filter)
            figures = figures_of(chosen)
            assert answer["total_calls"] == figures.calls, where
            assert answer["total_errors"] == figures.errors, where
            assert answer["error_rate"] == figures.error_rate, where
            assert_breakdown(answer, chosen, where)
            newest_errors = sorted((c.used_at for c in chosen if c.is_error), reverse=True)[:50]
            assert [e["used_at"] for e in answer["recent_errors"]] == [
                iso(m) for m in newest_errors
            ], where


@EXAMPLES
@given(case=usage_cases(), bounds=explicit_bounds())
@example(case=REGRESSION_CASE, bounds=REGRESSION_BOUNDS)
def test_errors_equal_the_oracle_by_status_failure_kind_and_message(
    fresh_services: FreshServices, case: Case, bounds: tuple[datetime, datetime]
) -> None:
    run_example(fresh_services, case, bounds, check_errors)


# -- /api/usage/costs ------------------------------------------------------------------------


def cost_row_key(group_by: str, key: Any, loaded: Loaded) -> dict[str, Any]:
    if group_by == "model":
        return {"model": key}
    if group_by == "team":
        return {"team_id": key}
    if group_by == "route":
        return {"route_path": key}
    info = loaded.tokens.get(key) if key is not None else None
    return {
        "token_id": key,
        "name": info.name if info else "unknown token",
        "team_id": info.team_id if info else None,
    }


def identity(row: dict[str, Any]) -> str:
    """A cost row's group, for sorting rows the same way whatever their order."""
    return str([row.get(key) for key in ("model", "team_id", "token_id", "route_path")])


async def check_costs(services: Services, loaded: Loaded, windows: list[Window]) -> None:
    for number, window in enumerate(windows):
        for actor, team_id, scope in STATS_SCOPES if number >= 2 else STATS_SCOPES[:1]:
            chosen = select(loaded.calls, window.since, window.until, scope)
            for group_by in ("model", "team", "token", "route"):
                where = f"costs {actor.name} team={team_id} {window} {group_by}"
                answer = await services.analytics.costs(
                    actor, window, group_by=group_by, team_id=team_id
                )
                assert answer["group_by"] == group_by
                expected = [
                    cost_row_key(group_by, key, loaded) | llm_figures_of(calls, with_detail=True)
                    for key, calls in costs_by(chosen, group_by).items()
                ]

                assert sorted(answer["rows"], key=identity) == sorted(expected, key=identity), where
                # Most expensive first (an unpriced group's known cost is 0).
                spent = [Decimal(row["cost_usd"] or 0) for row in answer["rows"]]
                assert spent == sorted(spent, reverse=True), where
                llm = [c for c in chosen if c.usage_source is not None]
                assert answer["totals"] == llm_figures_of(llm, with_detail=True), where


@EXAMPLES
@given(case=usage_cases(), bounds=explicit_bounds())
@example(case=REGRESSION_CASE, bounds=REGRESSION_BOUNDS)
def test_costs_equal_the_oracle_by_model_team_token_and_route(
    fresh_services: FreshServices, case: Case, bounds: tuple[datetime, datetime]
) -> None:
    run_example(fresh_services, case, bounds, check_costs)
