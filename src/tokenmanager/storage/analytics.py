"""SQL for analytics. Figures come from the rollups: the daily table for whole days, the hourly
table for the hours at the window's edges, combined with UNION ALL and summed. Raw rows are read
only for recent lists, error drill-downs, slow calls and export, through their indexes.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.analytics.figures import LLM_MEASURES, TIMED_CALLS, Totals
from tokenmanager.analytics.windows import Window, split_by_day
from tokenmanager.storage.schema import token_usage_logs, tokens, usage_daily, usage_hourly
from tokenmanager.usage.histogram import BUCKET_COLUMNS

_KEY_COLUMNS = ("token_hash", "token_id", "route_path", "status_class")
_COUNTED = ("calls", "errors", "sum_latency_ms", "bytes_in", "bytes_out", *LLM_MEASURES)
_SUMMED = (*_COUNTED, *BUCKET_COLUMNS)
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


def _measures(source: Any, *, with_histogram: bool) -> list[Any]:
    """The summed measures of `source`'s rows; with the histogram its latency buckets too (30
    of the sums), else only their total, `timed_calls`."""

    # PostgreSQL sums bigints into numeric, which reaches Python as Decimal: cast back, so
    # the driver decodes plain integers (a tenth of the time for a few hundred groups).
    def total(value: Any) -> Any:
        return sa.cast(sa.func.sum(value), sa.BigInteger)

    measures = [
        total(source.c[name]).label(name) for name in _SUMMED if with_histogram or name in _COUNTED
    ]
    if not with_histogram:
        timed = functools.reduce(operator.add, (source.c[name] for name in BUCKET_COLUMNS))
        measures.append(total(timed).label(TIMED_CALLS))
    measures.append(sa.func.max(source.c.max_latency_ms).label("max_latency_ms"))
    return measures


Grouping = tuple[str, ...]
Grouped = list[tuple[tuple[Any, ...], Totals]]


async def read_groupings(
    connection: AsyncConnection,
    window: Window,
    where: UsageFilter,
    groupings: Collection[Grouping],
    *,
    hourly: Collection[Grouping] = (),
    counts_only: Collection[Grouping] = (),
) -> dict[Grouping, Grouped]:
    """Totals per value of each grouping's keys (e.g. ("route_path",)), busiest first; the
    grouping () has one entry, the window's totals.

    Groupings in `hourly` read hourly rows only (a daily row's period is its midnight, which
    would put a whole day on one hour); the others read the daily rollup for whole days. Each
    source is read once for all its groupings: the dashboard's figures cost one or two scans
    instead of one per figure. A scan whose groupings are all in `counts_only` leaves out the
    latency histogram, 30 of the 49 sums (their `Totals` have no percentiles).
    """
    days, _ = split_by_day(window)
    if days is None:  # no whole day: both sources are the hourly rows, one scan does
        passes = [(True, list(groupings))]
    else:
        passes = [
            (True, [g for g in groupings if g in hourly]),
            (False, [g for g in groupings if g not in hourly]),
        ]
    results: dict[Grouping, Grouped] = {}
    for hourly_only, chosen in passes:
        if chosen:
            source = rollup_source(window, where, hourly_only=hourly_only)
            with_histogram = not set(chosen) <= set(counts_only)
            results.update(
                await _read_source(connection, source, chosen, with_histogram=with_histogram)
            )
    return results


async def _read_source(
    connection: AsyncConnection, source: Any, groupings: list[Grouping], *, with_histogram: bool
) -> dict[Grouping, Grouped]:
    results: dict[Grouping, Grouped] = {grouping: [] for grouping in groupings}
    if connection.dialect.name != "postgresql" or len(results) == 1:
        # SQLite has no GROUPING SETS: one query per grouping.
        for grouping in results:
            query = sa.select(
                *(source.c[key] for key in grouping),
                *_measures(source, with_histogram=with_histogram),
            )
            if grouping:
                query = query.group_by(*(source.c[key] for key in grouping))
            for row in await connection.execute(query):
                results[grouping].append((tuple(row._mapping[k] for k in grouping), Totals.of(row)))
    else:
        keys = list(dict.fromkeys(key for grouping in results for key in grouping))
        # GROUPING(keys) has a bit set, first key highest, for each key a row is not grouped by.
        masks = {
            sum(1 << (len(keys) - 1 - i) for i, key in enumerate(keys) if key not in g): g
            for g in results
        }
        query = sa.select(
            *(source.c[key] for key in keys),
            sa.func.grouping(*(source.c[key] for key in keys)).label("grouping_mask"),
            *_measures(source, with_histogram=with_histogram),
        ).group_by(sa.func.grouping_sets(*(sa.tuple_(*(source.c[k] for k in g)) for g in results)))
        for row in await connection.execute(query):
            grouping = masks[row.grouping_mask]
            values = tuple(row._mapping[key] for key in grouping)
            results[grouping].append((values, Totals.of(row)))
    for grouped in results.values():
        grouped.sort(key=_busiest_first)
    if () in results and not results[()]:
        results[()] = [((), Totals())]
    return results


def _busiest_first(entry: tuple[tuple[Any, ...], Totals]) -> tuple[Any, ...]:
    """Most calls first, ties by key (None after values, as PostgreSQL sorts)."""
    values, figures = entry
    return (-figures.calls, *((value is None, value) for value in values))


async def read_totals(connection: AsyncConnection, window: Window, where: UsageFilter) -> Totals:
    grouped = await read_groupings(connection, window, where, [()])
    return grouped[()][0][1]


async def read_grouped(
    connection: AsyncConnection,
    window: Window,
    where: UsageFilter,
    keys: Grouping,
    *,
    hourly_only: bool = False,
    with_histogram: bool = True,
) -> Grouped:
    """Totals per value of `keys`, busiest first."""
    grouped = await read_groupings(
        connection,
        window,
        where,
        [keys],
        hourly=[keys] if hourly_only else [],
        counts_only=[] if with_histogram else [keys],
    )
    return grouped[keys]


def distinct_tokens(by_token: Grouped) -> tuple[int, set[int]]:
    """(distinct tokens, the known token ids) among groups by ("token_id", "token_hash"). A
    token counts once under all its hashes (a rotated token has two); each unknown hash counts
    as one."""
    ids = {token_id for (token_id, _), _ in by_token if token_id is not None}
    unknown = {token_hash for (token_id, token_hash), _ in by_token if token_id is None}
    return len(ids) + len(unknown), ids


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


async def read_active_token_ids(
    connection: AsyncConnection, now: datetime, team_ids: Collection[str] | None
) -> set[int]:
    """Tokens that are neither revoked nor expired."""
    query = sa.select(tokens.c.id).where(
        tokens.c.revoked_at.is_(None),
        sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
    )
    if team_ids is not None:
        query = query.where(tokens.c.team_id.in_(list(team_ids)))
    return set((await connection.execute(query)).scalars())


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


@dataclass(frozen=True, slots=True)
class ErrorCount:
    value: Any
    count: int


_BREAKDOWN = {
    "by_status": token_usage_logs.c.response_status,
    "by_failure_kind": token_usage_logs.c.failure_kind,
    "top_messages": token_usage_logs.c.error_message,
}


async def read_error_breakdown(
    connection: AsyncConnection, window: Window, where: UsageFilter, *, top_messages: int = 10
) -> dict[str, list[ErrorCount]]:
    """Errors in the window by status (a missing status too), by failure kind and the most
    frequent messages (both without NULL), most frequent first, ties by value. PostgreSQL
    counts all three in one scan of the error index (GROUPING SETS); SQLite, which lacks
    them, runs one query each."""
    in_window = sa.and_(
        _IS_ERROR,
        token_usage_logs.c.used_at >= window.since,
        token_usage_logs.c.used_at < window.until,
    )
    count = sa.func.count().label("count")
    counted: dict[str, list[ErrorCount]] = {name: [] for name in _BREAKDOWN}
    if connection.dialect.name == "postgresql":
        columns = list(_BREAKDOWN.values())
        mask = sa.func.grouping(*columns)
        # GROUPING() sets a bit, first column highest, for each column a row is not grouped by.
        masks = {0b011: "by_status", 0b101: "by_failure_kind", 0b110: "top_messages"}
        query = _raw_filter(
            sa.select(*columns, mask.label("grouping_mask"), count)
            .where(in_window)
            .group_by(sa.func.grouping_sets(*(sa.tuple_(column) for column in columns))),
            where,
        )
        for row in await connection.execute(query):
            name = masks[row.grouping_mask]
            value = row._mapping[_BREAKDOWN[name].name]
            if value is not None or name == "by_status":
                counted[name].append(ErrorCount(value, row._mapping["count"]))
    else:
        for name, column in _BREAKDOWN.items():
            query = _raw_filter(
                sa.select(column.label("value"), count).where(in_window).group_by(column), where
            )
            if name != "by_status":
                query = query.where(column.is_not(None))
            counted[name] = [
                ErrorCount(row.value, row._mapping["count"])
                for row in await connection.execute(query)
            ]
    for entries in counted.values():
        entries.sort(key=lambda entry: (-entry.count, entry.value is None, entry.value))
    counted["top_messages"] = counted["top_messages"][:top_messages]
    return counted


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
