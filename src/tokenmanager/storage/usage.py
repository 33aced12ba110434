"""SQL for usage: the batched, idempotent insert that keeps `tokens.last_used` and the hourly
and daily rollups current in the same transaction (on PostgreSQL in one statement). Only rows
that were really inserted (new `event_id`s) reach the rollup, so replaying a batch never counts
a call twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import token_usage_logs, tokens, usage_daily, usage_hourly
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.histogram import BUCKET_COLUMNS, BUCKET_UPPER_BOUNDS_MS
from tokenmanager.usage.rollup import RollupKey, RollupRow, build_rollup

_EVENT_COLUMNS = (
    "event_id", "token_hash", "token_id", "route_path", "used_at", "response_status",
    "response_time_ms", "ttfb_ms", "ip_address", "user_agent", "request_method",
    "error_message", "bytes_in", "bytes_out", "failure_kind", "source",
)  # fmt: skip


def _dialect_insert(connection: AsyncConnection, table: sa.Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def _resolve_token_ids(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    """Fill in token_id for events that carry only a hash (ingested from external gateways)."""
    unknown = {e.token_hash for e in events if e.token_id is None and e.token_hash}
    if not unknown:
        return
    rows = await connection.execute(
        sa.select(tokens.c.id, tokens.c.token_hash, tokens.c.previous_token_hash).where(
            sa.or_(tokens.c.token_hash.in_(unknown), tokens.c.previous_token_hash.in_(unknown))
        )
    )
    ids: dict[str, int] = {}
    for row in rows:
        ids[row.token_hash] = row.id
        if row.previous_token_hash:
            ids[row.previous_token_hash] = row.id
    for event in events:
        if event.token_id is None:
            event.token_id = ids.get(event.token_hash)


async def insert_usage_events(connection: AsyncConnection, events: Sequence[UsageEvent]) -> int:
    """Insert events not stored yet, update last_used and the rollup; return how many were new."""
    if not events:
        return 0
    await _resolve_token_ids(connection, events)
    unique = list({event.event_id: event for event in events}.values())
    if connection.dialect.name == "postgresql":
        return await _insert_postgres(connection, unique)
    new_ids = set(await _insert_new_rows(connection, unique))
    inserted = [event for event in unique if event.event_id in new_ids]
    await _update_last_used(connection, inserted)
    await _add_to_rollup(connection, inserted)
    return len(inserted)


async def _insert_new_rows(connection: AsyncConnection, events: list[UsageEvent]) -> list[str]:
    """INSERT … ON CONFLICT DO NOTHING RETURNING event_id, as one statement with many parameter
    sets: SQLAlchemy compiles it once (cached) and batches the rows itself."""
    statement = (
        _dialect_insert(connection, token_usage_logs)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(token_usage_logs.c.event_id)
    )
    rows = [{name: getattr(e, name) for name in _EVENT_COLUMNS} for e in events]
    return list((await connection.execute(statement, rows)).scalars())


def _array_type(column: sa.Column[Any]) -> str:
    """`VARCHAR[]` for a VARCHAR(36) column: unbounded, so that a value too long for the column
    fails the insert (as a plain INSERT does) instead of being cut short by the cast."""
    compiled: str = column.type.compile(dialect=PGDialect())  # type: ignore[no-untyped-call]
    return compiled.split("(")[0] + "[]"


def _bucket_condition(index: int) -> str:
    """SQL for "the latency falls in bucket `index`", as histogram.bucket_index decides it."""
    upper = BUCKET_UPPER_BOUNDS_MS[index]
    conditions = []
    if index:
        conditions.append(f"response_time_ms > {BUCKET_UPPER_BOUNDS_MS[index - 1]:g}")
    if upper != float("inf"):
        conditions.append(f"response_time_ms <= {upper:g}")
    return " AND ".join(conditions)


def _rollup_conflict(table: str, period: str) -> str:
    """Add a delta row to the stored one (the same sums, greatest and coalesce as
    `_rollup_upsert`)."""
    updates = [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in _ROLLUP_ADDITIVE]
    updates.append(f"max_latency_ms = GREATEST({table}.max_latency_ms, EXCLUDED.max_latency_ms)")
    updates.append(f"token_id = COALESCE({table}.token_id, EXCLUDED.token_id)")
    return (
        f"ON CONFLICT ({period}, token_hash, route_path, status_class) "
        f"DO UPDATE SET {', '.join(updates)}"
    )


def _ingest_sql() -> str:
    """One statement for a whole batch on PostgreSQL: insert the rows (column arrays, unnest)
    whose event_id is new, add exactly those rows to the hourly and daily rollups, move
    tokens.last_used forward, and return how many rows were new.

    The database computes the rollup deltas from the rows the insert returned (what
    `RollupRow.add` does per event in Python: the oracle tests compare both with a brute-force
    computation), so no per-event Python work is left but building the arrays, and a batch is
    one round trip. Rollup rows are written in key order (ORDER BY), so concurrent writers lock
    them in one order and cannot deadlock.
    """
    columns = ", ".join(_EVENT_COLUMNS)
    arrays = ", ".join(
        f"${index}::{_array_type(token_usage_logs.c[name])}"
        for index, name in enumerate(_EVENT_COLUMNS, start=1)
    )
    # UsageEvent.status_class and .is_error
    status_class = (
        "CASE WHEN response_status BETWEEN 100 AND 599 THEN response_status / 100 ELSE 0 END"
    )
    is_error = (
        "failure_kind IS NOT NULL OR response_status >= 400 "
        "OR (response_status IS NULL AND error_message IS NOT NULL)"
    )
    buckets = ", ".join(
        f"count(*) FILTER (WHERE {_bucket_condition(index)}) AS {name}"
        for index, name in enumerate(BUCKET_COLUMNS)
    )
    rollup_columns = (
        "token_hash, route_path, status_class, token_id, calls, errors, sum_latency_ms, "
        f"max_latency_ms, bytes_in, bytes_out, {', '.join(BUCKET_COLUMNS)}"
    )
    bucket_sums = ", ".join(f"sum({name})" for name in BUCKET_COLUMNS)
    return (
        "WITH new_rows AS ("  # noqa: S608 - fixed names
        f"INSERT INTO token_usage_logs ({columns}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (event_id) DO NOTHING "
        "RETURNING token_hash, token_id, route_path, used_at, response_status, "
        "response_time_ms, error_message, bytes_in, bytes_out, failure_kind"
        "), hourly AS ("
        "SELECT date_trunc('hour', used_at) AS hour, token_hash, "
        f"coalesce(route_path, '') AS route_path, {status_class} AS status_class, "
        f"max(token_id) AS token_id, count(*) AS calls, count(*) FILTER (WHERE {is_error}) "
        "AS errors, coalesce(sum(response_time_ms), 0) AS sum_latency_ms, "
        "coalesce(max(response_time_ms), 0) AS max_latency_ms, "
        "coalesce(sum(bytes_in), 0) AS bytes_in, coalesce(sum(bytes_out), 0) AS bytes_out, "
        f"{buckets} FROM new_rows GROUP BY 1, 2, 3, 4"
        "), hourly_upsert AS ("
        f"INSERT INTO usage_hourly (hour, {rollup_columns}) "
        f"SELECT hour, {rollup_columns} FROM hourly ORDER BY 1, 2, 3, 4 "
        f"{_rollup_conflict('usage_hourly', 'hour')}"
        "), daily_upsert AS ("
        f"INSERT INTO usage_daily (day, {rollup_columns}) "
        "SELECT date_trunc('day', hour), token_hash, route_path, status_class, max(token_id), "
        "sum(calls), sum(errors), sum(sum_latency_ms), max(max_latency_ms), sum(bytes_in), "
        f"sum(bytes_out), {bucket_sums} FROM hourly GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 "
        f"{_rollup_conflict('usage_daily', 'day')}"
        "), last_used AS ("
        "UPDATE tokens SET last_used = latest.used_at FROM ("
        "SELECT token_id, max(used_at) AS used_at FROM new_rows WHERE token_id IS NOT NULL "
        "GROUP BY token_id"
        ") AS latest WHERE tokens.id = latest.token_id "
        "AND (tokens.last_used IS NULL OR tokens.last_used < latest.used_at)"
        ") SELECT count(*) FROM new_rows"
    )


async def _insert_postgres(connection: AsyncConnection, events: list[UsageEvent]) -> int:
    """The batch as one array per column, in one statement (`_ingest_sql`)."""
    arrays: list[list[Any]] = [[getattr(e, name) for e in events] for name in _EVENT_COLUMNS]
    used_at = _EVENT_COLUMNS.index("used_at")
    # As the UTCDateTime column type binds it: naive UTC.
    arrays[used_at] = [
        moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
        for moment in arrays[used_at]
    ]
    result = await connection.exec_driver_sql(_INGEST_SQL, tuple(arrays))
    return int(result.scalar_one())


async def _update_last_used(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    latest: dict[int, datetime] = {}
    for event in events:
        if event.token_id is None:
            continue
        known = latest.get(event.token_id)
        if known is None or event.used_at > known:
            latest[event.token_id] = event.used_at
    if not latest:
        return
    await connection.execute(
        tokens.update()
        .where(
            tokens.c.id == sa.bindparam("b_id"),
            sa.or_(tokens.c.last_used.is_(None), tokens.c.last_used < sa.bindparam("b_used")),
        )
        .values(last_used=sa.bindparam("b_used")),
        [{"b_id": token_id, "b_used": used_at} for token_id, used_at in sorted(latest.items())],
    )


async def _add_to_rollup(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    for period in ("hour", "day"):
        await write_rollup(connection, build_rollup(events, period), period)


async def write_rollup(
    connection: AsyncConnection, rollup: dict[RollupKey, RollupRow], period: str
) -> None:
    """Add rollup rows to the stored ones (upsert) in the hourly or daily table."""
    table = usage_hourly if period == "hour" else usage_daily
    # Sorted keys: concurrent writers lock rollup rows in one order and cannot deadlock.
    items = sorted(rollup.items())
    if not items:
        return
    if connection.dialect.name == "postgresql":
        await _upsert_rollup_arrays(connection, table, period, items)
        return
    rows = [row.as_values(key, period) for key, row in items]
    await connection.execute(_rollup_upsert(connection, table, period), rows)


_ROLLUP_ADDITIVE = ("calls", "errors", "sum_latency_ms", "bytes_in", "bytes_out", *BUCKET_COLUMNS)
_ROLLUP_ARRAY_TYPES = {
    # column: PostgreSQL array element type, in the order the rows are sent
    "token_hash": "varchar", "route_path": "varchar", "status_class": "smallint",
    "token_id": "integer", "calls": "bigint", "errors": "bigint", "sum_latency_ms": "bigint",
    "max_latency_ms": "integer", "bytes_in": "bigint", "bytes_out": "bigint",
    **{name: "bigint" for name in BUCKET_COLUMNS},
}  # fmt: skip


def _rollup_array_sql(table: sa.Table, period: str) -> str:
    """One INSERT … SELECT FROM unnest(column arrays) ON CONFLICT DO UPDATE for the whole batch:
    one statement instead of one per rollup row (the same sums, greatest and coalesce as
    `_rollup_upsert`). unnest keeps the arrays' order, so rows are still locked in key order."""
    columns = (period, *_ROLLUP_ARRAY_TYPES)
    arrays = ", ".join(
        f"${index}::{kind}[]"
        for index, kind in enumerate(("timestamp", *_ROLLUP_ARRAY_TYPES.values()), start=1)
    )
    name = table.name
    updates = [f"{c} = {name}.{c} + EXCLUDED.{c}" for c in _ROLLUP_ADDITIVE]
    updates.append(f"max_latency_ms = GREATEST({name}.max_latency_ms, EXCLUDED.max_latency_ms)")
    updates.append(f"token_id = COALESCE({name}.token_id, EXCLUDED.token_id)")
    return (
        f"INSERT INTO {name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "  # noqa: S608 - fixed names
        f"ON CONFLICT ({period}, token_hash, route_path, status_class) "
        f"DO UPDATE SET {', '.join(updates)}"
    )


_INGEST_SQL = _ingest_sql()
_ROLLUP_ARRAY_SQL = {
    "hour": _rollup_array_sql(usage_hourly, "hour"),
    "day": _rollup_array_sql(usage_daily, "day"),
}


async def _upsert_rollup_arrays(
    connection: AsyncConnection,
    table: sa.Table,
    period: str,
    items: list[tuple[RollupKey, RollupRow]],
) -> None:
    """PostgreSQL: the batch's rollup rows as one array per column, in one statement. Row by
    row (executemany) costs a statement execution per rollup row, and a batch of 1000 events
    makes hundreds of them in each of the two rollup tables."""
    starts, hashes, paths, classes, token_ids = [], [], [], [], []
    measures: list[list[int]] = [[] for _ in range(6)]
    buckets: list[list[int]] = [[] for _ in BUCKET_COLUMNS]
    for (start, token_hash, route_path, status_class), row in items:
        # As the UTCDateTime column type binds it: naive UTC.
        starts.append(start.astimezone(UTC).replace(tzinfo=None) if start.tzinfo else start)
        hashes.append(token_hash)
        paths.append(route_path)
        classes.append(status_class)
        token_ids.append(row.token_id)
        for values, value in zip(
            measures,
            (row.calls, row.errors, row.sum_latency_ms, row.max_latency_ms,
             row.bytes_in, row.bytes_out),
            strict=True,
        ):  # fmt: skip
            values.append(value)
        for values, value in zip(buckets, row.buckets, strict=True):
            values.append(value)
    fairy = await connection.get_raw_connection()
    driver: Any = fairy.driver_connection
    await driver.execute(
        _ROLLUP_ARRAY_SQL[period], starts, hashes, paths, classes, token_ids, *measures, *buckets
    )


def _rollup_upsert(connection: AsyncConnection, table: sa.Table, period: str) -> Any:
    """INSERT … ON CONFLICT DO UPDATE adding the new counts to the stored ones."""
    is_postgres = connection.dialect.name == "postgresql"
    greatest = sa.func.greatest if is_postgres else sa.func.max  # SQLite's 2-argument max()
    statement = _dialect_insert(connection, table)
    excluded = statement.excluded
    additive = ("calls", "errors", "sum_latency_ms", "bytes_in", "bytes_out", *BUCKET_COLUMNS)
    updates: dict[str, Any] = {name: table.c[name] + excluded[name] for name in additive}
    updates["max_latency_ms"] = greatest(table.c.max_latency_ms, excluded.max_latency_ms)
    updates["token_id"] = sa.func.coalesce(table.c.token_id, excluded.token_id)
    return statement.on_conflict_do_update(
        index_elements=[period, "token_hash", "route_path", "status_class"], set_=updates
    )
