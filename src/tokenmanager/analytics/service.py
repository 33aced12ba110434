"""Analytics for the API and the dashboard, in the seed's shapes plus what the product adds.

Viewers see only their teams' usage: every query is filtered to their teams' tokens, and a
token or team of another team is reported as not found. Usage of unknown tokens (hashes that
match no token) is visible to admins only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tokenmanager.access.actor import Actor
from tokenmanager.analytics.costs import GROUP_BY, build_cost_rows
from tokenmanager.analytics.figures import Totals
from tokenmanager.analytics.windows import DAY, Window, day_starts, hour_starts
from tokenmanager.calendar import period_bounds
from tokenmanager.clock import utcnow
from tokenmanager.errors import InvalidInputError, NotFoundError
from tokenmanager.pricing.money import format_usd
from tokenmanager.storage import analytics as analytics_sql
from tokenmanager.storage import costs as costs_sql
from tokenmanager.storage import spend as spend_sql
from tokenmanager.storage import tokens as tokens_sql
from tokenmanager.storage.analytics import UsageFilter
from tokenmanager.storage.database import Database
from tokenmanager.usage.rollup import day_of

UNKNOWN_TOKEN_NAME = "unknown token"  # noqa: S105 - a label, not a secret
TOP_LIMIT = 10
MAX_HOURLY_POINTS = 31 * 24
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Groupings of rollup rows (analytics_sql.read_groupings)
PERIOD = ("period",)
TOKEN = ("token_id", "token_hash")
ROUTE = ("route_path",)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _window_view(window: Window, bucket: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {"since": _iso(window.since), "until": _iso(window.until)}
    if bucket is not None:
        view["bucket"] = bucket
    return view


class AnalyticsService:
    def __init__(self, database: Database) -> None:
        self._db = database

    # -- access --------------------------------------------------------------------------

    def _team_scope(self, actor: Actor, team_id: str | None) -> list[str] | None:
        """The team ids to filter on (None: no filter); NotFoundError for a team not visible."""
        if team_id is not None:
            if not actor.can_view_team(team_id):
                raise NotFoundError("team not found")
            return [team_id]
        visible = actor.visible_team_ids
        return None if visible is None else sorted(visible)

    async def _visible_token(self, actor: Actor, token_id: int) -> Any:
        async with self._db.read() as connection:
            token = await tokens_sql.read_token(connection, token_id)
        if token is None or not actor.can_view_team(token.team_id):
            raise NotFoundError("token not found")
        return token

    async def _filter(
        self, actor: Actor, team_id: str | None, route_path: str | None, token_id: int | None
    ) -> UsageFilter:
        """The drill-down filter; NotFoundError for a team or token the actor cannot see."""
        if token_id is not None:
            await self._visible_token(actor, token_id)
        return UsageFilter(
            team_ids=self._team_scope(actor, team_id), route_path=route_path, token_id=token_id
        )

    # -- /api/usage/stats ----------------------------------------------------------------

    async def stats(
        self, actor: Actor, window: Window, *, bucket: str = "hour", team_id: str | None = None
    ) -> dict[str, Any]:
        """Overview, a time series, top tokens and top routes over the window."""
        if bucket == "hour" and window.hours > MAX_HOURLY_POINTS:
            raise InvalidInputError("bucket", "use bucket=day for windows longer than 31 days")
        where = UsageFilter(team_ids=self._team_scope(actor, team_id))
        now = utcnow()
        async with self._db.read() as connection:
            grouped = await analytics_sql.read_groupings(
                connection,
                window,
                where,
                [PERIOD, TOKEN, ROUTE],
                hourly=[PERIOD] if bucket == "hour" else [],
                counts_only=[TOKEN],
            )
            active_ids = await analytics_sql.read_active_token_ids(connection, now, where.team_ids)
            top_tokens = await self._token_entries(connection, grouped[TOKEN], TOP_LIMIT)
        totals = _total(grouped[ROUTE])
        unique_tokens, used_ids = analytics_sql.distinct_tokens(grouped[TOKEN])
        return {
            "window": _window_view(window, bucket),
            "overview": {
                "total_calls": totals.calls,
                "total_errors": totals.errors,
                "avg_response_time": totals.avg_response_time,
                "success_rate": totals.success_rate,
                "error_rate": totals.error_rate,
                **totals.latency_summary(),
                "unique_tokens": unique_tokens,
                "active_tokens": len(used_ids),
                # Active tokens without a call in the window (a revoked or expired token's
                # calls do not make an active one busy).
                "idle_tokens": len(active_ids - used_ids),
                "bytes_in": totals.bytes_in,
                "bytes_out": totals.bytes_out,
                **totals.llm_summary(),
            },
            "hourly_usage": _series(window, grouped[PERIOD], bucket),
            "top_tokens": top_tokens,
            "top_routes": [
                _route_entry(key[0], figures) for key, figures in grouped[ROUTE][:TOP_LIMIT]
            ],
        }

    async def _token_entries(
        self, connection: Any, grouped: analytics_sql.Grouped, limit: int | None
    ) -> list[dict[str, Any]]:
        """Entries of groups by TOKEN, busiest first, with the tokens' names."""
        # A rotated token has several hashes: its rows are merged under its id. Unknown hashes
        # stay apart, each its own "unknown token".
        merged: dict[Any, tuple[int | None, str, Totals]] = {}
        for (token_id, token_hash), figures in grouped:
            key = token_id if token_id is not None else f"hash:{token_hash}"
            entry = merged.setdefault(key, (token_id, token_hash, Totals()))
            entry[2].add(figures)
        ranked = sorted(merged.values(), key=lambda entry: (-entry[2].calls, str(entry[0])))
        if limit is not None:
            ranked = ranked[:limit]
        names = await analytics_sql.read_token_names(
            connection, [token_id for token_id, _, _ in ranked if token_id is not None]
        )
        entries = []
        for token_id, token_hash, figures in ranked:
            name, team = (
                names.get(token_id, (UNKNOWN_TOKEN_NAME, None))
                if token_id
                else (
                    UNKNOWN_TOKEN_NAME,
                    None,
                )
            )
            entries.append(
                {
                    "token_id": token_id,
                    "name": name,
                    "team_id": team,
                    "usage_count": figures.calls,
                    "error_count": figures.errors,
                    "avg_response_time": figures.avg_response_time,
                    "success_rate": figures.success_rate,
                    "token_hash_prefix": None if token_id else token_hash[:8],
                }
            )
        return entries

    # -- the dashboard's lists ---------------------------------------------------------------

    async def calls_by_token(
        self, actor: Actor, window: Window, *, team_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every token with calls in the window, busiest first (top_tokens' entries, no limit)."""
        where = UsageFilter(team_ids=self._team_scope(actor, team_id))
        async with self._db.read() as connection:
            grouped = await analytics_sql.read_grouped(
                connection, window, where, TOKEN, with_histogram=False
            )
            return await self._token_entries(connection, grouped, None)

    async def calls_by_route(
        self, actor: Actor, window: Window, *, team_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every route with calls in the window, busiest first (top_routes' entries, no limit)."""
        where = UsageFilter(team_ids=self._team_scope(actor, team_id))
        async with self._db.read() as connection:
            grouped = await analytics_sql.read_grouped(connection, window, where, ROUTE)
        return [_route_entry(key[0], figures) for key, figures in grouped]

    # -- /api/usage/token/{id} -----------------------------------------------------------

    async def token_usage(
        self, actor: Actor, token_id: int, window: Window, *, limit: int, offset: int
    ) -> dict[str, Any]:
        token = await self._visible_token(actor, token_id)
        where = UsageFilter(token_id=token_id)
        async with self._db.read() as connection:
            grouped = await analytics_sql.read_groupings(
                connection, window, where, [ROUTE, PERIOD], hourly=[PERIOD], counts_only=[PERIOD]
            )
            first_used, last_used = await analytics_sql.read_first_and_last_use(connection, where)
            recent = await analytics_sql.read_recent_usage(
                connection, where, limit=limit, offset=offset
            )
            errors = await analytics_sql.read_error_breakdown(connection, window, where)
        totals = _total(grouped[ROUTE])
        return {
            "window": _window_view(window),
            "token": {
                "id": token.id,
                "name": token.name,
                "team_id": token.team_id,
                "display_prefix": token.display_prefix,
                "state": token.state_at(utcnow()).value,
            },
            "stats": {
                "total_calls": totals.calls,
                "error_count": totals.errors,
                "avg_response_time": totals.avg_response_time,
                "first_used": _iso(first_used),
                "last_used": _iso(token.last_used or last_used),
                "error_rate": totals.error_rate,
                "success_rate": totals.success_rate,
                **totals.latency_summary(),
                **totals.llm_summary(),
            },
            "recent_usage": [_usage_entry(row) for row in recent],
            "recent_usage_page": {"limit": limit, "offset": offset, "returned": len(recent)},
            "route_distribution": [
                _route_entry(key[0], figures) for key, figures in grouped[ROUTE]
            ],
            "time_profile": _time_profile(grouped[PERIOD]),
            "errors": _errors_view(errors),
        }

    # -- /api/usage/route ----------------------------------------------------------------

    async def route_usage(
        self, actor: Actor, route_path: str, window: Window, *, team_id: str | None = None
    ) -> dict[str, Any]:
        where = UsageFilter(team_ids=self._team_scope(actor, team_id), route_path=route_path)
        # The latency trend is hourly for windows up to 31 days, daily beyond.
        bucket = "hour" if window.hours <= MAX_HOURLY_POINTS else "day"
        async with self._db.read() as connection:
            grouped = await analytics_sql.read_groupings(
                connection,
                window,
                where,
                [TOKEN, PERIOD],
                hourly=[PERIOD] if bucket == "hour" else [],
                counts_only=[TOKEN],
            )
            tokens = await self._token_entries(connection, grouped[TOKEN], None)
            errors = await analytics_sql.read_error_breakdown(connection, window, where)
        totals = _total(grouped[PERIOD])
        return {
            "window": _window_view(window),
            "route": {"route_path": route_path},
            "stats": {
                "total_calls": totals.calls,
                "error_count": totals.errors,
                "error_rate": totals.error_rate,
                "success_rate": totals.success_rate,
                "avg_response_time": totals.avg_response_time,
                **totals.latency_summary(),
                **totals.llm_summary(),
            },
            "token_distribution": tokens,
            "latency_trend": _series(window, grouped[PERIOD], bucket),
            "errors": _errors_view(errors),
        }

    # -- /api/usage/costs ----------------------------------------------------------------

    async def costs(
        self, actor: Actor, window: Window, *, group_by: str, team_id: str | None = None
    ) -> dict[str, Any]:
        """LLM calls' tokens and cost by model, team, token or route over the window, most
        expensive first, with the totals. Viewers see the calls charged to their teams."""
        if group_by not in GROUP_BY:
            raise InvalidInputError("group_by", f"must be one of {', '.join(GROUP_BY)}")
        team_ids = self._team_scope(actor, team_id)
        async with self._db.read() as connection:
            grouped = await costs_sql.read_costs(connection, window, group_by, team_ids)
            names = (
                await analytics_sql.read_token_names(connection, [key for key, _ in grouped if key])
                if group_by == "token"
                else {}
            )
        rows, totals = build_cost_rows(group_by, grouped, names)
        return {
            "window": _window_view(window),
            "group_by": group_by,
            "rows": rows,
            "totals": totals,
        }

    # -- budgets -------------------------------------------------------------------------

    async def period_spend(
        self, subjects: Sequence[tuple[str, str, str]], at: datetime, zone: ZoneInfo
    ) -> dict[tuple[str, str, str], tuple[int, datetime, datetime]]:
        """(scope, subject, period) -> (spend in pUSD, period start, period end) for the
        calendar period (in `zone`) containing `at`: what a budget bar shows. The caller has
        read the token or team through its service, so the actor may see it."""
        if not subjects:
            return {}
        bounds = {key: period_bounds(key[2], at, zone) for key in subjects}
        async with self._db.read() as connection:
            spent = await spend_sql.read_spend(
                connection, [(*key, bounds[key][0]) for key in subjects]
            )
        return {key: (spent[(*key, bounds[key][0])], *bounds[key]) for key in subjects}

    # -- drill-downs ---------------------------------------------------------------------

    async def errors(
        self,
        actor: Actor,
        window: Window,
        *,
        team_id: str | None = None,
        route_path: str | None = None,
        token_id: int | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        where = await self._filter(actor, team_id, route_path, token_id)
        async with self._db.read() as connection:
            totals = await analytics_sql.read_totals(connection, window, where)
            breakdown = await analytics_sql.read_error_breakdown(connection, window, where)
            recent = await analytics_sql.read_recent_errors(connection, window, where, limit=limit)
        return {
            "window": _window_view(window),
            "total_calls": totals.calls,
            "total_errors": totals.errors,
            "error_rate": totals.error_rate,
            **_errors_view(breakdown),
            "recent_errors": [_usage_entry(row) for row in recent],
        }

    async def slow_calls(
        self,
        actor: Actor,
        window: Window,
        *,
        team_id: str | None = None,
        route_path: str | None = None,
        token_id: int | None = None,
        min_response_time_ms: int = 0,
        limit: int = 50,
    ) -> dict[str, Any]:
        where = await self._filter(actor, team_id, route_path, token_id)
        async with self._db.read() as connection:
            rows = await analytics_sql.read_slow_calls(
                connection, window, where, min_response_time_ms=min_response_time_ms, limit=limit
            )
        return {"window": _window_view(window), "calls": [_usage_entry(row) for row in rows]}

    async def idle_tokens(
        self, actor: Actor, days: int, *, team_id: str | None = None
    ) -> dict[str, Any]:
        """Revoke candidates: active tokens older than `days` days that were not used in the
        last `days` days (never used, or last used before then)."""
        now = utcnow()
        cutoff = now - timedelta(days=days)
        async with self._db.read() as connection:
            rows = await analytics_sql.read_idle_tokens(
                connection, now, cutoff, self._team_scope(actor, team_id)
            )
        return {
            "days": days,
            "tokens": [
                {
                    "id": row.id,
                    "name": row.name,
                    "team_id": row.team_id,
                    "created_at": _iso(row.created_at),
                    "last_used": _iso(row.last_used),
                    "idle_days": (now - (row.last_used or row.created_at)) // DAY,
                    "never_used": row.last_used is None,
                }
                for row in rows
            ],
        }

    async def latest(self, actor: Actor, limit: int = 10) -> list[dict[str, Any]]:
        """The newest raw records (the seed's test-data)."""
        where = UsageFilter(team_ids=self._team_scope(actor, None))
        async with self._db.read() as connection:
            rows = await analytics_sql.read_recent_usage(connection, where, limit=limit)
        return [_raw_record(row) for row in rows]

    async def export_rows(
        self,
        actor: Actor,
        window: Window,
        *,
        team_id: str | None = None,
        route_path: str | None = None,
        token_id: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every raw record in the window, oldest first, streamed from the database."""
        where = await self._filter(actor, team_id, route_path, token_id)
        async with self._db.read() as connection:
            async for row in analytics_sql.stream_usage_rows(connection, window, where):
                yield _raw_record(row)


def _total(grouped: analytics_sql.Grouped) -> Totals:
    """The window's totals, from the groups of any one grouping read with its histogram: each
    rollup row is in exactly one group, so this is exact, and the database need not compute
    them as a grouping of their own."""
    total = Totals()
    for _, figures in grouped:
        total.add(figures)
    return total


def _series(window: Window, by_period: analytics_sql.Grouped, bucket: str) -> list[dict[str, Any]]:
    """One point per hour (or day) of the window, zeros included, oldest first, from groups by
    PERIOD (hourly rows for bucket=hour). The key stays `hour` as in the seed; with bucket=day
    it holds the day's start."""
    by_start: dict[datetime, Totals] = {}
    fold = day_of if bucket == "day" else (lambda moment: moment)
    for (period,), figures in by_period:
        by_start.setdefault(fold(period), Totals()).add(figures)
    starts = day_starts(window) if bucket == "day" else hour_starts(window)
    return [_series_point(start, by_start.get(start, Totals())) for start in starts]


def _series_point(start: datetime, figures: Totals) -> dict[str, Any]:
    return {
        "hour": _iso(start),
        "call_count": figures.calls,
        "error_count": figures.errors,
        "avg_response_time": figures.avg_response_time,
        "p50_response_time": figures.percentile(0.50),
        "p95_response_time": figures.percentile(0.95),
        "prompt_tokens": figures.prompt_tokens,
        "completion_tokens": figures.completion_tokens,
    }


def _route_entry(route_path: str, figures: Totals) -> dict[str, Any]:
    return {
        "route_path": route_path or None,
        "call_count": figures.calls,
        "error_count": figures.errors,
        "avg_response_time": figures.avg_response_time,
        "success_rate": figures.success_rate,
        "p95_response_time": figures.percentile(0.95),
    }


def _usage_entry(row: Any) -> dict[str, Any]:
    return {
        "route_path": row.route_path,
        "used_at": _iso(row.used_at),
        "response_status": row.response_status,
        "response_time_ms": row.response_time_ms,
        "request_method": row.request_method,
        "ip_address": row.ip_address,
        "failure_kind": row.failure_kind,
        "error_message": row.error_message,
        "token_id": row.token_id,
        "model": row.model,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_usd": _money(row.cost_pusd),
        "usage_source": row.usage_source,
    }


def _money(pusd: int | None) -> str | None:
    return None if pusd is None else format_usd(pusd)


RAW_FIELDS = (
    "id", "event_id", "token_hash", "token_id", "route_path", "used_at", "response_status",
    "response_time_ms", "ttfb_ms", "ip_address", "user_agent", "request_method",
    "error_message", "bytes_in", "bytes_out", "failure_kind", "source", "team_id", "model",
    "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens",
    "usage_source", "cost_usd",
)  # fmt: skip


def _raw_record(row: Any) -> dict[str, Any]:
    """A raw row as exported: money as the exact decimal string in USD (null: unknown)."""
    record = {name: getattr(row, name) for name in RAW_FIELDS if name != "cost_usd"}
    record["used_at"] = _iso(row.used_at)
    record["cost_usd"] = _money(row.cost_pusd)
    return record


def _errors_view(breakdown: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "by_status": [{"status": r.value, "count": r.count} for r in breakdown["by_status"]],
        "by_failure_kind": [
            {"failure_kind": r.value, "count": r.count} for r in breakdown["by_failure_kind"]
        ],
        "top_messages": [{"message": r.value, "count": r.count} for r in breakdown["top_messages"]],
    }


def _time_profile(hourly: list[tuple[tuple[Any, ...], Totals]]) -> dict[str, Any]:
    """Calls per weekday x hour of day (UTC), from hourly rollup rows."""
    matrix = [[0] * 24 for _ in WEEKDAYS]
    for (period,), figures in hourly:
        matrix[period.weekday()][period.hour] += figures.calls
    return {"timezone": "UTC", "weekdays": list(WEEKDAYS), "calls": matrix}
