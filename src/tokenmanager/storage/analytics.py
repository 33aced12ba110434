"""SQL for analytics. Figures come from the rollups: the daily table for whole days, the hourly
table for the hours at the window's edges, combined with UNION ALL and summed. Raw rows are read
only for recent lists, error drill-downs, slow calls and export, through their indexes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.analytics.figures import Totals
from tokenmanager.analytics.windows import Window, split_by_day
from tokenmanager.storage.schema import token_usage_logs, tokens, usage_daily, usage_hourly
from tokenmanager.usage.histogram import BUCKET_COLUMNS

_KEY_COLUMNS = ("token_hash", "token_id", "route_path", "status_class")
_SUMMED = ("calls", "errors", "sum_latency_ms", "bytes_in", "bytes_out", *BUCKET_COLUMNS)
# UsageEvent.is_error, as the rollup counts errors; the partial error indexes use the same.
# 400 is written into the SQL, not bound: a prepared statement's generic plan (which asyncpg's
# statement cache gets after five runs) can use a partial index only when the query's predicate
# matches the index's as written; with a parameter it read every row of a busy token instead.
_IS_ERROR = sa.or_(
    token_usage_logs.c.response_status >= sa.literal_column("400", sa.Integer),
    token_usage_logs.c.failure_kind.is_not(None),
    sa.and_(
        token_usage_logs.c.response_status.is_(None),
        token_usage_logs.c.error_message.is_not(None),
    ),
)


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which usage to count. `team_ids=None` means every team and unknown tokens too."""

    team_ids: Collection[str] | None = None
    token_id: int | None = None
    route_path: str | None = None


def _team_token_ids(team_ids: Collection[str]) -> Any:
    return sa.select(tokens.c.id).where(tokens.c.team_id.in_(list(team_ids)))


def _rollup_part(
    table: sa.Table, period: str, start: datetime, end: datetime, where: UsageFilter
) -> Any:
    query = sa.select(
        table.c[period].label("period"),
        *(table.c[name] for name in _KEY_COLUMNS),
        table.c.max_latency_ms,
        *(table.c[name] for name in _SUMMED),
    ).where(table.c[period] >= start, table.c[period] < end)
    if where.token_id is not None:
        query = query.where(table.c.token_id == where.token_id)
    if where.route_path is not None:
        query = query.where(table.c.route_path == where.route_path)
    if where.team_ids is not None:
        query = query.where(table.c.token_id.in_(_team_token_ids(where.team_ids)))
    return query


def rollup_source(window: Window, where: UsageFilter, *, hourly_only: bool = False) -> Any:
    """The rollup rows covering the window exactly, as one subquery (hourly rows only when the
    caller needs hour-of-day detail)."""
    days, edges = (None, [window]) if hourly_only else split_by_day(window)
    parts = [_rollup_part(usage_hourly, "hour", e.since, e.until, where) for e in edges]
    if days is not None:
        parts.append(_rollup_part(usage_daily, "day", days[0], days[1], where))
    if len(parts) == 1:
        return parts[0].subquery("usage")
    combined: Any = sa.union_all(*parts)
    return combined.subquery("usage")


def _measures(source: Any) -> list[Any]:
    return [
        *(sa.func.sum(source.c[name]).label(name) for name in _SUMMED),
        sa.func.max(source.c.max_latency_ms).label("max_latency_ms"),
    ]


async def read_totals(connection: AsyncConnection, window: Window, where: UsageFilter) -> Totals:
    source = rollup_source(window, where)
    row = (await connection.execute(sa.select(*_measures(source)))).one()
    return Totals.of(row)


async def read_grouped(
    connection: AsyncConnection,
    window: Window,
    where: UsageFilter,
    keys: tuple[str, ...],
    *,
    limit: int | None = None,
    hourly_only: bool = False,
) -> list[tuple[tuple[Any, ...], Totals]]:
    """Totals per value of `keys` (e.g. ("route_path",)), busiest first."""
    source = rollup_source(window, where, hourly_only=hourly_only)
    key_columns = [source.c[key] for key in keys]
    query = (
        sa.select(*key_columns, *_measures(source))
        .group_by(*key_columns)
        .order_by(sa.func.sum(source.c.calls).desc(), *key_columns)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = await connection.execute(query)
    return [(tuple(row._mapping[key] for key in keys), Totals.of(row)) for row in rows]


async def read_distinct_tokens(
    connection: AsyncConnection, window: Window, where: UsageFilter
) -> tuple[int, int]:
    """(distinct tokens, distinct known token ids) with calls in the window. A token counts
    once under all its hashes (a rotated token has two); each unknown hash counts as one."""
    source = rollup_source(window, where)
    unknown_hash = sa.case((source.c.token_id.is_(None), source.c.token_hash))
    query = sa.select(
        sa.func.count(sa.distinct(unknown_hash)),
        sa.func.count(sa.distinct(source.c.token_id)),
    )
    unknown_hashes, ids = (await connection.execute(query)).one()
    return int(unknown_hashes) + int(ids), int(ids)


async def read_token_names(
    connection: AsyncConnection, token_ids: Collection[int]
) -> dict[int, tuple[str, str]]:
    """{token id: (name, team id)}."""
    if not token_ids:
        return {}
    query = sa.select(tokens.c.id, tokens.c.name, tokens.c.team_id).where(
        tokens.c.id.in_(list(token_ids))
    )
    return {row.id: (row.name, row.team_id) for row in await connection.execute(query)}


async def count_active_tokens(
    connection: AsyncConnection,
    now: datetime,
    team_ids: Collection[str] | None,
    *,
    unused_in: Window | None = None,
) -> int:
    """Tokens that are neither revoked nor expired; with `unused_in`, only those without a call
    in that window (a revoked or expired token's calls do not make an active one busy)."""
    query = (
        sa.select(sa.func.count())
        .select_from(tokens)
        .where(
            tokens.c.revoked_at.is_(None),
            sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
        )
    )
    if team_ids is not None:
        query = query.where(tokens.c.team_id.in_(list(team_ids)))
    if unused_in is not None:
        source = rollup_source(unused_in, UsageFilter(team_ids=team_ids))
        used = sa.select(source.c.token_id).where(source.c.token_id.is_not(None))
        query = query.where(tokens.c.id.not_in(used))
    return int((await connection.execute(query)).scalar_one())


async def read_idle_tokens(
    connection: AsyncConnection,
    now: datetime,
    unused_since: datetime,
    team_ids: Collection[str] | None,
) -> list[Any]:
    """Active tokens never used, or not used since `unused_since`; longest idle first."""
    query = (
        sa.select(
            tokens.c.id, tokens.c.name, tokens.c.team_id, tokens.c.created_at, tokens.c.last_used
        )
        .where(
            tokens.c.revoked_at.is_(None),
            sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
            sa.or_(tokens.c.last_used.is_(None), tokens.c.last_used < unused_since),
            tokens.c.created_at < unused_since,
        )
        .order_by(tokens.c.last_used.asc().nulls_first(), tokens.c.id)
    )
    if team_ids is not None:
        query = query.where(tokens.c.team_id.in_(list(team_ids)))
    return list(await connection.execute(query))


# -- raw rows -----------------------------------------------------------------------------


def _raw_filter(query: Any, where: UsageFilter) -> Any:
    if where.token_id is not None:
        query = query.where(token_usage_logs.c.token_id == where.token_id)
    if where.route_path is not None:
        query = query.where(token_usage_logs.c.route_path == where.route_path)
    if where.team_ids is not None:
        query = query.where(token_usage_logs.c.token_id.in_(_team_token_ids(where.team_ids)))
    return query


async def read_recent_usage(
    connection: AsyncConnection, where: UsageFilter, *, limit: int, offset: int = 0
) -> list[Any]:
    """Newest first."""
    query = _raw_filter(
        token_usage_logs.select()
        .order_by(token_usage_logs.c.used_at.desc(), token_usage_logs.c.id.desc())
        .limit(limit)
        .offset(offset),
        where,
    )
    return list(await connection.execute(query))


async def read_first_and_last_use(
    connection: AsyncConnection, where: UsageFilter
) -> tuple[datetime | None, datetime | None]:
    query = _raw_filter(
        sa.select(sa.func.min(token_usage_logs.c.used_at), sa.func.max(token_usage_logs.c.used_at)),
        where,
    )
    first, last = (await connection.execute(query)).one()
    column_type = token_usage_logs.c.used_at.type
    dialect = connection.dialect
    convert = column_type.result_processor(dialect, None)  # aggregates skip the type decorator
    return (convert(first) if convert else first), (convert(last) if convert else last)


async def read_error_breakdown(
    connection: AsyncConnection, window: Window, where: UsageFilter, *, top_messages: int = 10
) -> dict[str, list[Any]]:
    """Errors in the window by status, by failure kind, and the most frequent messages."""
    in_window = sa.and_(
        _IS_ERROR,
        token_usage_logs.c.used_at >= window.since,
        token_usage_logs.c.used_at < window.until,
    )
    breakdown: dict[str, list[Any]] = {}
    for name, column in (
        ("by_status", token_usage_logs.c.response_status),
        ("by_failure_kind", token_usage_logs.c.failure_kind),
        ("top_messages", token_usage_logs.c.error_message),
    ):
        count = sa.func.count().label("count")
        query = _raw_filter(
            sa.select(column.label("value"), count)
            .where(in_window)
            .group_by(column)
            .order_by(count.desc(), column),
            where,
        )
        if name != "by_status":
            query = query.where(column.is_not(None))
        if name == "top_messages":
            query = query.limit(top_messages)
        breakdown[name] = list(await connection.execute(query))
    return breakdown


async def read_recent_errors(
    connection: AsyncConnection, window: Window, where: UsageFilter, *, limit: int
) -> list[Any]:
    """The newest errors in the window."""
    query = _raw_filter(
        token_usage_logs.select()
        .where(
            _IS_ERROR,
            token_usage_logs.c.used_at >= window.since,
            token_usage_logs.c.used_at < window.until,
        )
        .order_by(token_usage_logs.c.used_at.desc(), token_usage_logs.c.id.desc())
        .limit(limit),
        where,
    )
    return list(await connection.execute(query))


async def read_slow_calls(
    connection: AsyncConnection,
    window: Window,
    where: UsageFilter,
    *,
    min_response_time_ms: int,
    limit: int,
) -> list[Any]:
    query = _raw_filter(
        token_usage_logs.select()
        .where(
            token_usage_logs.c.used_at >= window.since,
            token_usage_logs.c.used_at < window.until,
            token_usage_logs.c.response_time_ms >= min_response_time_ms,
        )
        .order_by(token_usage_logs.c.response_time_ms.desc(), token_usage_logs.c.id)
        .limit(limit),
        where,
    )
    return list(await connection.execute(query))


async def stream_usage_rows(
    connection: AsyncConnection, window: Window, where: UsageFilter
) -> AsyncIterator[Any]:
    """Every raw row in the window, oldest first, fetched in chunks (never all in memory)."""
    query = _raw_filter(
        token_usage_logs.select()
        .where(
            token_usage_logs.c.used_at >= window.since,
            token_usage_logs.c.used_at < window.until,
        )
        .order_by(token_usage_logs.c.used_at, token_usage_logs.c.id)
        .execution_options(yield_per=1000),
        where,
    )
    result = await connection.stream(query)
    async for row in result:
        yield row
