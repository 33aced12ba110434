"""`/api/usage/*`: the seed's analytics shapes (spec §4) and what the product adds, with every
figure checked against calls posted through the ingestion API; viewers see only their teams."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
import time_machine

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.tokens.codec import hash_token
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.rollup import day_of, hour_of

from .answers import expect_error, get_json
from .usage_records import UNKNOWN_TOKEN_HASH, post_records, seed_record

Client = httpx.AsyncClient
Headers = dict[str, str]
SEED_RECORD_FIELDS = {
    "token_hash", "route_path", "used_at", "response_status", "response_time_ms",
    "ip_address", "user_agent", "request_method", "error_message",
}  # fmt: skip


@dataclass(frozen=True)
class Call:
    token: str  # "alpha", "bravo" or "unknown"
    route: str
    status: int
    latency_ms: int
    at: datetime
    error_message: str | None = None

    @property
    def is_error(self) -> bool:
        return self.status >= 400


@dataclass(frozen=True)
class Usage:
    """The posted calls and the tokens they were made with."""

    calls: list[Call]
    token_ids: dict[str, int]  # name -> id; "charlie" of team-a is never used
    token_hashes: dict[str, str]

    def of(self, *tokens: str, route: str | None = None) -> list[Call]:
        return [
            call
            for call in self.calls
            if call.token in tokens and (route is None or call.route == route)
        ]


def figures(calls: Iterable[Call]) -> dict[str, Any]:
    """The oracle: what the seed's figures must be for `calls`."""
    calls = list(calls)
    errors = sum(call.is_error for call in calls)
    latency = sum(call.latency_ms for call in calls)
    return {
        "calls": len(calls),
        "errors": errors,
        "avg_response_time": round(latency / len(calls), 1),
        "success_rate": round(100 * (len(calls) - errors) / len(calls), 2),
    }


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def at_or_none(text: str | None) -> datetime | None:
    return None if text is None else at(text)


def newest_first(calls: Iterable[Call]) -> list[Call]:
    return sorted(calls, key=lambda call: call.at, reverse=True)


def as_recent_usage(calls: Iterable[Call]) -> list[tuple[Any, ...]]:
    return [(c.route, c.at, c.status, c.latency_ms) for c in calls]


def recent_usage_of(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (i["route_path"], at(i["used_at"]), i["response_status"], i["response_time_ms"])
        for i in items
    ]


def calls_per_period(points: list[dict[str, Any]]) -> dict[datetime, int]:
    """{period start: calls} of a series, periods without calls left out."""
    return {at(point["hour"]): point["call_count"] for point in points if point["call_count"]}


def base_hour() -> datetime:
    """Three hours before the current one: inside every default window however the hour turns
    while the test runs."""
    return hour_of(utcnow()) - timedelta(hours=3)


async def issue_tokens(services: Services, admin: Actor) -> dict[str, Any]:
    """alpha and charlie of team-a, bravo of team-b (teams must exist)."""
    teams = {"alpha": "team-a", "bravo": "team-b", "charlie": "team-a"}
    return {
        name: await services.tokens.issue(admin, name=name, team_id=team)
        for name, team in teams.items()
    }


async def post_calls(
    client: Client, services: Services, key_secret: str, usage: Usage, calls: Iterable[Call]
) -> None:
    records = [
        seed_record(
            token_hash=usage.token_hashes[call.token],
            route=call.route,
            timestamp=call.at.isoformat(),
            response_status=call.status,
            response_time_ms=call.latency_ms,
            error_message=call.error_message,
        )
        for call in calls
    ]
    await post_records(client, services, key_secret, records)


@pytest.fixture
async def usage(
    app_client: Client,
    services: Services,
    admin: Actor,
    teams: tuple[str, str],
    ingest_key_secret: str,
) -> Usage:
    issued = await issue_tokens(services, admin)
    hour = base_hour()
    minute = timedelta(minutes=1)
    calls = [
        Call("alpha", "/api/openai", 200, 100, hour + 5 * minute),
        Call("alpha", "/api/openai", 200, 200, hour + 10 * minute),
        Call("alpha", "/api/openai", 200, 300, hour + 15 * minute),
        Call("alpha", "/api/openai", 500, 600, hour + 20 * minute, "upstream exploded"),
        Call("alpha", "/api/embed", 200, 40, hour - timedelta(hours=2) + 5 * minute),
        Call("bravo", "/api/aws", 200, 50, hour + 25 * minute),
        Call("bravo", "/api/aws", 404, 150, hour + 30 * minute, "no such bucket"),
        Call("unknown", "/api/openai", 200, 1000, hour + 35 * minute),
    ]
    usage = Usage(
        calls=calls,
        token_ids={name: item.token.id for name, item in issued.items()},
        token_hashes={
            **{name: hash_token(item.token_secret) for name, item in issued.items()},
            "unknown": UNKNOWN_TOKEN_HASH,
        },
    )
    await post_calls(app_client, services, ingest_key_secret, usage, calls)
    return usage


# GET /api/usage/stats


async def test_stats_overview_matches_the_posted_calls(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")

    expected = figures(usage.calls)
    overview = stats["overview"]
    assert overview["total_calls"] == expected["calls"]
    assert overview["total_errors"] == expected["errors"]
    assert overview["avg_response_time"] == expected["avg_response_time"]
    assert overview["success_rate"] == expected["success_rate"]
    assert overview["unique_tokens"] == 3  # alpha, bravo and the unknown hash
    assert overview["active_tokens"] == 2  # known tokens with calls
    assert overview["idle_tokens"] == 1  # charlie
    latencies = sorted(call.latency_ms for call in usage.calls)
    p50, p95, p99 = (overview[f"p{n}_response_time"] for n in (50, 95, 99))
    assert latencies[0] <= p50 <= p95 <= p99 <= latencies[-1]


async def test_stats_has_the_seed_shape(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")

    assert {"overview", "hourly_usage", "top_tokens", "top_routes"} <= set(stats)
    assert {"total_calls", "total_errors", "avg_response_time", "success_rate"} <= set(
        stats["overview"]
    )
    for point in stats["hourly_usage"]:
        assert {"hour", "call_count", "avg_response_time"} <= set(point)
    for token in stats["top_tokens"]:
        assert {"name", "team_id", "usage_count", "token_id"} <= set(token)
    for route in stats["top_routes"]:
        assert {"route_path", "call_count", "avg_response_time", "success_rate"} <= set(route)
    assert stats["top_tokens"]
    assert stats["top_routes"]


async def test_stats_hourly_usage_has_every_hour_of_the_day_with_its_calls(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")

    series = stats["hourly_usage"]
    starts = [at(point["hour"]) for point in series]
    assert len(series) == 24
    assert starts == sorted(starts)
    assert {start - starts[0] for start in starts} == {timedelta(hours=n) for n in range(24)}
    by_hour: dict[datetime, list[Call]] = {}
    for call in usage.calls:
        by_hour.setdefault(hour_of(call.at), []).append(call)
    assert calls_per_period(series) == {hour: len(calls) for hour, calls in by_hour.items()}
    for point in series:
        calls = by_hour.get(at(point["hour"]))
        if calls:
            assert point["avg_response_time"] == figures(calls)["avg_response_time"]


async def test_stats_top_tokens_rank_by_calls_with_unknown_token_last(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")

    top = [(t["name"], t["team_id"], t["usage_count"], t["token_id"]) for t in stats["top_tokens"]]
    assert top == [
        ("alpha", "team-a", len(usage.of("alpha")), usage.token_ids["alpha"]),
        ("bravo", "team-b", len(usage.of("bravo")), usage.token_ids["bravo"]),
        ("unknown token", None, len(usage.of("unknown")), None),
    ]


async def test_stats_top_routes_carry_their_own_figures(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")

    routes = {route["route_path"]: route for route in stats["top_routes"]}
    assert list(routes) == ["/api/openai", "/api/aws", "/api/embed"]  # busiest first
    for path, route in routes.items():
        expected = figures(call for call in usage.calls if call.route == path)
        assert route["call_count"] == expected["calls"]
        assert route["avg_response_time"] == expected["avg_response_time"]
        assert route["success_rate"] == expected["success_rate"]


async def test_stats_without_usage_answer_zeros(app_client: Client, admin_headers: Headers) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")

    overview = stats["overview"]
    assert (overview["total_calls"], overview["total_errors"]) == (0, 0)
    assert overview["avg_response_time"] == 0.0
    assert overview["success_rate"] == 100.0
    assert overview["p95_response_time"] is None
    assert (stats["top_tokens"], stats["top_routes"]) == ([], [])
    assert [point["call_count"] for point in stats["hourly_usage"]] == [0] * 24


# Windows and buckets


@pytest.fixture
async def older_call(
    app_client: Client, services: Services, ingest_key_secret: str, usage: Usage
) -> Call:
    """One alpha call three days ago: inside 7 days, outside 24 hours."""
    call = Call("alpha", "/api/openai", 200, 70, base_hour() - timedelta(days=3))
    await post_calls(app_client, services, ingest_key_secret, usage, [call])
    return call


async def test_window_7d_counts_what_24h_leaves_out(
    app_client: Client, admin_headers: Headers, usage: Usage, older_call: Call
) -> None:
    day = await get_json(app_client, admin_headers, "/api/usage/stats")
    week = await get_json(app_client, admin_headers, "/api/usage/stats?window=7d&bucket=day")

    assert day["overview"]["total_calls"] == len(usage.calls)
    assert week["overview"]["total_calls"] == len(usage.calls) + 1
    since, until = at(week["window"]["since"]), at(week["window"]["until"])
    assert until - since == timedelta(days=7)
    days = [at(point["hour"]) for point in week["hourly_usage"]]
    assert days[0] == day_of(since)
    assert all(later - earlier == timedelta(days=1) for earlier, later in pairwise(days))
    expected = Counter(day_of(call.at) for call in [*usage.calls, older_call])
    assert calls_per_period(week["hourly_usage"]) == dict(expected)


async def test_since_and_until_select_whole_hours(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    hour = base_hour()
    params = {
        "since": (hour + timedelta(minutes=1)).isoformat(),
        "until": (hour + timedelta(minutes=59)).isoformat(),
    }

    stats = (await app_client.get("/api/usage/stats", params=params, headers=admin_headers)).json()

    in_hour = [call for call in usage.calls if hour_of(call.at) == hour]
    assert (at(stats["window"]["since"]), at(stats["window"]["until"])) == (
        hour,
        hour + timedelta(hours=1),
    )
    assert stats["overview"]["total_calls"] == len(in_hour)
    assert stats["overview"]["avg_response_time"] == figures(in_hour)["avg_response_time"]
    assert len(stats["hourly_usage"]) == 1


async def test_team_filter_counts_only_that_teams_tokens(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats?team_id=team-b")

    assert stats["overview"]["total_calls"] == len(usage.of("bravo"))
    assert [token["name"] for token in stats["top_tokens"]] == ["bravo"]


def _days_ago(days: int) -> str:
    return (utcnow() - timedelta(days=days)).isoformat()


BAD_PARAMETERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "since-after-until": (
        "/api/usage/stats",
        {"since": "2025-11-05T12:00:00Z", "until": "2025-11-05T10:00:00Z"},
        "since",
    ),
    "unknown-window": ("/api/usage/stats", {"window": "90d"}, "window"),
    "window-and-since": (
        "/api/usage/stats",
        {"window": "7d", "since": "2025-11-05T10:00:00Z"},
        "window",
    ),
    "unknown-bucket": ("/api/usage/stats", {"bucket": "week"}, "bucket"),
    "since-garbage": ("/api/usage/stats", {"since": "last tuesday"}, "since"),
    "span-over-400-days": (
        "/api/usage/stats",
        {"since": "2020-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z", "bucket": "day"},
        "since",
    ),
    "route-without-path": ("/api/usage/route", {}, "route_path"),
    "slow-limit-over-cap": ("/api/usage/slow", {"limit": 501}, "limit"),
    "slow-negative-minimum": (
        "/api/usage/slow",
        {"min_response_time_ms": -1},
        "min_response_time_ms",
    ),
    "errors-limit-over-cap": ("/api/usage/errors", {"limit": 501}, "limit"),
    "idle-days-zero": ("/api/usage/idle-tokens", {"days": 0}, "days"),
    "export-unknown-format": ("/api/usage/export", {"format": "xlsx"}, "format"),
}


@pytest.mark.parametrize(
    ("path", "params", "field"), list(BAD_PARAMETERS.values()), ids=list(BAD_PARAMETERS)
)
async def test_bad_query_parameter_gets_422_naming_it(
    app_client: Client, admin_headers: Headers, path: str, params: dict[str, Any], field: str
) -> None:
    answer = await app_client.get(path, params=params, headers=admin_headers)

    expect_error(answer, 422, field)


async def test_hourly_bucket_over_31_days_gets_422_naming_bucket(
    app_client: Client, admin_headers: Headers
) -> None:
    params = {"since": _days_ago(40), "bucket": "hour"}

    answer = await app_client.get("/api/usage/stats", params=params, headers=admin_headers)

    expect_error(answer, 422, "bucket")
    params["bucket"] = "day"
    assert (
        await app_client.get("/api/usage/stats", params=params, headers=admin_headers)
    ).is_success


async def test_token_usage_limit_over_the_cap_gets_422(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    path = f"/api/usage/token/{usage.token_ids['alpha']}"

    expect_error(await app_client.get(f"{path}?limit=1001", headers=admin_headers), 422, "limit")
    expect_error(await app_client.get(f"{path}?offset=-1", headers=admin_headers), 422, "offset")


# GET /api/usage/token/{id}  # noqa: ERA001 - a section heading, not code


async def test_token_usage_has_the_seed_shape_and_figures(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    token_id = usage.token_ids["alpha"]

    body = await get_json(app_client, admin_headers, f"/api/usage/token/{token_id}")

    calls = usage.of("alpha")
    expected = figures(calls)
    assert body["token"] | {"id": token_id, "name": "alpha", "team_id": "team-a"} == body["token"]
    stats = body["stats"]
    assert (stats["total_calls"], stats["error_count"]) == (expected["calls"], expected["errors"])
    assert stats["avg_response_time"] == expected["avg_response_time"]
    assert at(stats["first_used"]) == min(call.at for call in calls)
    assert at(stats["last_used"]) == max(call.at for call in calls)
    for item in body["recent_usage"]:
        assert {"route_path", "used_at", "response_status", "response_time_ms"} <= set(item)
    assert recent_usage_of(body["recent_usage"]) == as_recent_usage(newest_first(calls))


async def test_token_usage_breaks_down_routes_time_and_errors(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, f"/api/usage/token/{usage.token_ids['alpha']}")

    calls = usage.of("alpha")
    routes = {route["route_path"]: route["call_count"] for route in body["route_distribution"]}
    assert routes == dict(Counter(call.route for call in calls))
    profile = body["time_profile"]
    assert len(profile["calls"]) == 7
    assert all(len(day) == 24 for day in profile["calls"])
    expected = Counter((call.at.weekday(), call.at.hour) for call in calls)
    cells = {
        (weekday, hour): count
        for weekday, day in enumerate(profile["calls"])
        for hour, count in enumerate(day)
        if count
    }
    assert cells == dict(expected)
    errors = body["errors"]
    assert errors["by_status"] == [{"status": 500, "count": 1}]
    assert errors["top_messages"] == [{"message": "upstream exploded", "count": 1}]


async def test_token_usage_pages_recent_usage_with_limit_and_offset(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    path = f"/api/usage/token/{usage.token_ids['alpha']}?limit=2&offset=1"

    body = await get_json(app_client, admin_headers, path)

    expected = newest_first(usage.of("alpha"))[1:3]
    assert recent_usage_of(body["recent_usage"]) == as_recent_usage(expected)
    assert body["stats"]["total_calls"] == len(usage.of("alpha"))  # paging leaves figures alone


async def test_token_usage_recent_usage_defaults_to_the_latest_100(
    app_client: Client,
    services: Services,
    admin_headers: Headers,
    ingest_key_secret: str,
    usage: Usage,
) -> None:
    start = base_hour() - timedelta(hours=10)
    many = [Call("charlie", "/api/x", 200, 10, start + timedelta(seconds=n)) for n in range(105)]
    await post_calls(app_client, services, ingest_key_secret, usage, many)

    body = await get_json(
        app_client, admin_headers, f"/api/usage/token/{usage.token_ids['charlie']}"
    )

    assert recent_usage_of(body["recent_usage"]) == as_recent_usage(newest_first(many)[:100])
    assert body["stats"]["total_calls"] == 105


async def test_token_usage_of_a_missing_token_gets_404(
    app_client: Client, admin_headers: Headers
) -> None:
    expect_error(await app_client.get("/api/usage/token/999999", headers=admin_headers), 404)


# GET /api/usage/route


async def test_route_usage_has_stats_tokens_trend_and_errors(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    route = "/api/openai"

    body = await get_json(app_client, admin_headers, f"/api/usage/route?route_path={route}")

    calls = [call for call in usage.calls if call.route == route]
    expected = figures(calls)
    stats = body["stats"]
    assert (stats["total_calls"], stats["error_count"]) == (expected["calls"], expected["errors"])
    assert stats["avg_response_time"] == expected["avg_response_time"]
    assert stats["success_rate"] == expected["success_rate"]
    assert {"p50_response_time", "p95_response_time", "p99_response_time"} <= set(stats)
    tokens = [(t["name"], t["token_id"], t["usage_count"]) for t in body["token_distribution"]]
    assert tokens == [
        ("alpha", usage.token_ids["alpha"], len(usage.of("alpha", route=route))),
        ("unknown token", None, len(usage.of("unknown", route=route))),
    ]
    assert calls_per_period(body["latency_trend"]) == dict(Counter(hour_of(c.at) for c in calls))
    errors = body["errors"]
    assert errors["by_status"] == [{"status": 500, "count": 1}]
    assert errors["by_failure_kind"] == []
    assert errors["top_messages"] == [{"message": "upstream exploded", "count": 1}]


async def test_route_errors_count_gateway_failures_by_kind(
    app_client: Client, services: Services, admin_headers: Headers, usage: Usage
) -> None:
    route = "/api/openai"
    for _ in range(2):
        services.recorder.record(
            UsageEvent(
                token_hash=usage.token_hashes["alpha"],
                token_id=usage.token_ids["alpha"],
                route_path=route,
                used_at=base_hour() + timedelta(minutes=40),
                response_status=504,
                response_time_ms=30_000,
                failure_kind="upstream_timeout",
            )
        )
    await services.recorder.flush()

    body = await get_json(app_client, admin_headers, f"/api/usage/route?route_path={route}")

    errors = body["errors"]
    assert errors["by_failure_kind"] == [{"failure_kind": "upstream_timeout", "count": 2}]
    assert errors["by_status"] == [{"status": 504, "count": 2}, {"status": 500, "count": 1}]
    assert body["stats"]["error_count"] == 3


async def test_route_usage_of_an_unused_route_answers_zeros(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/route?route_path=/api/none")

    assert body["stats"]["total_calls"] == 0
    assert body["token_distribution"] == []


# GET /api/usage/test-data


@pytest.mark.parametrize("settings_overrides", [{"mode": "dev"}], ids=["dev"])
async def test_test_data_lists_the_10_latest_records_in_dev_mode(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    records = await get_json(app_client, admin_headers, "/api/usage/test-data")

    expected = newest_first(usage.calls)[:10]
    assert len(records) == min(10, len(usage.calls))
    for record in records:
        assert set(record) >= SEED_RECORD_FIELDS
    assert [(r["route_path"], at(r["used_at"]), r["response_time_ms"]) for r in records] == [
        (call.route, call.at, call.latency_ms) for call in expected
    ]


@pytest.mark.parametrize("settings_overrides", [{"mode": "dev"}], ids=["dev"])
async def test_test_data_stops_at_10_records(
    app_client: Client,
    services: Services,
    admin_headers: Headers,
    ingest_key_secret: str,
    usage: Usage,
) -> None:
    start = base_hour() + timedelta(minutes=45)
    extra = [Call("alpha", "/api/late", 200, n, start + timedelta(seconds=n)) for n in range(12)]
    await post_calls(app_client, services, ingest_key_secret, usage, extra)

    records = await get_json(app_client, admin_headers, "/api/usage/test-data")

    assert [r["response_time_ms"] for r in records] == list(range(11, 1, -1))


async def test_test_data_is_not_found_in_production(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    expect_error(await app_client.get("/api/usage/test-data", headers=admin_headers), 404)


# GET /api/usage/errors, /api/usage/slow


async def test_errors_lists_every_error_newest_first(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/errors")

    failed = newest_first(call for call in usage.calls if call.is_error)
    assert (body["total_calls"], body["total_errors"]) == (len(usage.calls), len(failed))
    assert [
        (e["route_path"], e["response_status"], e["error_message"]) for e in body["recent_errors"]
    ] == [(call.route, call.status, call.error_message) for call in failed]
    by_status = {entry["status"]: entry["count"] for entry in body["by_status"]}
    assert by_status == dict(Counter(call.status for call in failed))


async def test_errors_filter_by_route(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/errors?route_path=/api/aws")

    assert [e["error_message"] for e in body["recent_errors"]] == ["no such bucket"]


async def test_slow_lists_the_slowest_calls_first(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/slow")

    latencies = [call["response_time_ms"] for call in body["calls"]]
    assert latencies == sorted((call.latency_ms for call in usage.calls), reverse=True)


async def test_slow_keeps_only_calls_at_or_over_the_minimum(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/slow?min_response_time_ms=300")

    latencies = [call["response_time_ms"] for call in body["calls"]]
    assert latencies == sorted(
        (c.latency_ms for c in usage.calls if c.latency_ms >= 300), reverse=True
    )
    assert latencies


async def test_slow_limit_keeps_the_slowest(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/slow?limit=2")

    assert [call["response_time_ms"] for call in body["calls"]] == [1000, 600]


# GET /api/usage/idle-tokens


async def test_idle_tokens_lists_never_used_and_long_unused_tokens(
    app_client: Client,
    services: Services,
    admin: Actor,
    admin_headers: Headers,
    teams: tuple[str, str],
    ingest_key_secret: str,
) -> None:
    with time_machine.travel(utcnow() - timedelta(days=60)):
        issued = await issue_tokens(services, admin)
        old_revoked = await services.tokens.issue(admin, name="revoked", team_id="team-a")
        await services.tokens.revoke(admin, old_revoked.token.id)
    await services.tokens.issue(admin, name="fresh", team_id="team-a")
    usage = Usage(
        calls=[],
        token_ids={name: item.token.id for name, item in issued.items()},
        token_hashes={name: hash_token(item.token_secret) for name, item in issued.items()},
    )
    long_ago = utcnow().replace(microsecond=0) - timedelta(days=40)
    await post_calls(
        app_client,
        services,
        ingest_key_secret,
        usage,
        [
            Call("alpha", "/api/openai", 200, 10, long_ago),
            Call("bravo", "/api/openai", 200, 10, base_hour()),
        ],
    )

    body = await get_json(app_client, admin_headers, "/api/usage/idle-tokens?days=30")

    idle = [(t["name"], t["never_used"], at_or_none(t["last_used"])) for t in body["tokens"]]
    # Never used first, then longest idle; bravo was used today, "fresh" is too new to judge
    # and the revoked one is no candidate.
    assert idle == [("charlie", True, None), ("alpha", False, long_ago)]
    assert body["tokens"][1]["idle_days"] == 40
    assert body["days"] == 30

    shorter = await get_json(app_client, admin_headers, "/api/usage/idle-tokens?days=50")
    assert [token["name"] for token in shorter["tokens"]] == ["charlie"]


# GET /api/usage/export


def csv_records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def export(client: Client, headers: Headers, **params: Any) -> httpx.Response:
    answer = await client.get("/api/usage/export", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


async def test_export_csv_has_a_header_and_one_line_per_record(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    answer = await export(app_client, admin_headers, format="csv")

    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    lines = answer.text.splitlines()
    assert set(lines[0].split(",")) >= SEED_RECORD_FIELDS
    assert len(lines) == 1 + len(usage.calls)
    records = csv_records(answer.text)
    assert [(r["route_path"], at(r["used_at"]), int(r["response_time_ms"])) for r in records] == [
        (call.route, call.at, call.latency_ms) for call in sorted(usage.calls, key=lambda c: c.at)
    ]
    assert {r["token_hash"] for r in records} == set(usage.token_hashes.values()) - {
        usage.token_hashes["charlie"]
    }


async def test_export_ndjson_has_one_object_per_record(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    answer = await export(app_client, admin_headers, format="ndjson")

    assert answer.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in answer.text.splitlines()]
    assert len(records) == len(usage.calls)
    assert all(set(record) >= SEED_RECORD_FIELDS for record in records)
    assert sorted(r["response_time_ms"] for r in records) == sorted(
        c.latency_ms for c in usage.calls
    )


@pytest.mark.parametrize("export_format", ["csv", "ndjson"])
async def test_export_applies_route_and_token_filters(
    app_client: Client, admin_headers: Headers, usage: Usage, export_format: str
) -> None:
    def latencies(answer: httpx.Response) -> list[int]:
        if export_format == "csv":
            return [int(r["response_time_ms"]) for r in csv_records(answer.text)]
        return [json.loads(line)["response_time_ms"] for line in answer.text.splitlines()]

    by_route = await export(app_client, admin_headers, format=export_format, route_path="/api/aws")
    by_token = await export(
        app_client, admin_headers, format=export_format, token_id=usage.token_ids["alpha"]
    )

    assert latencies(by_route) == [c.latency_ms for c in usage.calls if c.route == "/api/aws"]
    assert sorted(latencies(by_token)) == sorted(c.latency_ms for c in usage.of("alpha"))


async def test_export_of_an_empty_window_has_only_the_csv_header(
    app_client: Client, admin_headers: Headers, usage: Usage
) -> None:
    answer = await export(app_client, admin_headers, route_path="/api/none")

    assert len(answer.text.splitlines()) == 1
    empty = await export(app_client, admin_headers, format="ndjson", route_path="/api/none")
    assert empty.text == ""


# Viewers


async def test_viewer_sees_only_their_teams_usage_in_stats(
    app_client: Client, viewer_headers: Headers, usage: Usage
) -> None:
    stats = await get_json(app_client, viewer_headers, "/api/usage/stats")

    mine = usage.of("alpha")
    overview = stats["overview"]
    assert overview["total_calls"] == figures(mine)["calls"]
    assert overview["total_errors"] == figures(mine)["errors"]
    assert overview["avg_response_time"] == figures(mine)["avg_response_time"]
    assert (overview["unique_tokens"], overview["active_tokens"]) == (1, 1)
    assert overview["idle_tokens"] == 1  # charlie, not bravo
    assert [token["name"] for token in stats["top_tokens"]] == ["alpha"]
    routes = {route["route_path"]: route["call_count"] for route in stats["top_routes"]}
    assert routes == dict(Counter(call.route for call in mine))
    assert sum(point["call_count"] for point in stats["hourly_usage"]) == len(mine)


async def test_viewer_sees_only_their_teams_errors_slow_calls_and_export(
    app_client: Client, viewer_headers: Headers, usage: Usage
) -> None:
    errors = await get_json(app_client, viewer_headers, "/api/usage/errors")
    slow = await get_json(app_client, viewer_headers, "/api/usage/slow")
    exported = csv_records((await export(app_client, viewer_headers)).text)
    route = await get_json(app_client, viewer_headers, "/api/usage/route?route_path=/api/openai")

    mine = usage.of("alpha")
    alpha_hash = usage.token_hashes["alpha"]
    assert [e["error_message"] for e in errors["recent_errors"]] == ["upstream exploded"]
    assert errors["total_calls"] == len(mine)
    assert sorted(c["response_time_ms"] for c in slow["calls"]) == sorted(
        c.latency_ms for c in mine
    )
    assert {record["token_hash"] for record in exported} == {alpha_hash}
    assert len(exported) == len(mine)
    assert [t["name"] for t in route["token_distribution"]] == ["alpha"]


async def test_viewer_sees_only_their_teams_idle_tokens(
    app_client: Client, services: Services, admin: Actor, viewer_headers: Headers
) -> None:
    with time_machine.travel(utcnow() - timedelta(days=60)):
        await issue_tokens(services, admin)

    body = await get_json(app_client, viewer_headers, "/api/usage/idle-tokens?days=30")

    assert sorted(token["name"] for token in body["tokens"]) == ["alpha", "charlie"]


async def test_viewer_reads_their_own_teams_token_usage(
    app_client: Client, viewer_headers: Headers, usage: Usage
) -> None:
    path = f"/api/usage/token/{usage.token_ids['alpha']}"

    body = await get_json(app_client, viewer_headers, path)

    assert body["stats"]["total_calls"] == len(usage.of("alpha"))


@pytest.mark.parametrize(
    "path",
    [
        "/api/usage/token/{bravo}",
        "/api/usage/stats?team_id=team-b",
        "/api/usage/route?route_path=/api/aws&team_id=team-b",
        "/api/usage/errors?team_id=team-b",
        "/api/usage/errors?token_id={bravo}",
        "/api/usage/slow?token_id={bravo}",
        "/api/usage/idle-tokens?team_id=team-b",
        "/api/usage/export?team_id=team-b",
        "/api/usage/export?token_id={bravo}",
    ],
)
async def test_viewer_gets_404_for_another_teams_token_or_team(
    app_client: Client, viewer_headers: Headers, usage: Usage, path: str
) -> None:
    answer = await app_client.get(
        path.format(bravo=usage.token_ids["bravo"]), headers=viewer_headers
    )

    expect_error(answer, 404)


@pytest.mark.parametrize(
    "path",
    [
        "/api/usage/stats",
        "/api/usage/token/1",
        "/api/usage/route?route_path=/api/openai",
        "/api/usage/test-data",
        "/api/usage/errors",
        "/api/usage/idle-tokens",
        "/api/usage/slow",
        "/api/usage/export",
        "/api/usage/export?format=ndjson",
    ],
)
@pytest.mark.parametrize("settings_overrides", [{"mode": "dev"}], ids=["dev"])
async def test_analytics_endpoints_need_sign_in(app_client: Client, path: str) -> None:
    answer = await app_client.get(path)

    expect_error(answer, 401)
    bad = await app_client.get(path, headers={"Authorization": "Bearer not-a-session"})
    expect_error(bad, 401)
