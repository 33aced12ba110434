"""SQL for usage: the batched, idempotent insert that keeps `tokens.last_used` and the hourly
rollup current in the same transaction. Only rows that were really inserted (new `event_id`s)
reach the rollup, so replaying a batch never counts a call twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import token_usage_logs, tokens, usage_daily, usage_hourly
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.histogram import BUCKET_COLUMNS
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
    by_id = {event.event_id: event for event in events}
    if connection.dialect.name == "postgresql":
        new_ids = await _copy_new_rows(connection, list(by_id.values()))
    else:
        new_ids = await _insert_new_rows(connection, list(by_id.values()))
    inserted = [by_id[event_id] for event_id in new_ids]
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


_STAGING_COLUMNS = ", ".join(_EVENT_COLUMNS)


async def _copy_new_rows(connection: AsyncConnection, events: list[UsageEvent]) -> list[str]:
    """PostgreSQL: COPY the batch into a session-private staging table, then move the rows
    whose event_id is new with one INSERT … SELECT. COPY skips per-row statement work, which
    is most of the client's cost."""
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it runs. When
    # every event already carries its token id no statement has run yet, and the driver calls
    # below would each commit on their own: ON COMMIT DELETE ROWS would empty the staging table
    # before the INSERT reads it, losing the batch without an error.
    await connection.execute(sa.text("SELECT 1"))
    fairy = await connection.get_raw_connection()
    driver: Any = fairy.driver_connection
    # Made sure of in every batch's own transaction, in the round trip that empties it: a
    # "created" flag kept on the connection would outlive a rolled-back transaction that
    # created the table, and every later batch on that connection would fail.
    await driver.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS tm_usage_staging ON COMMIT DELETE ROWS AS "  # noqa: S608 - fixed names
        f"SELECT {_STAGING_COLUMNS} FROM token_usage_logs WITH NO DATA; "
        "TRUNCATE tm_usage_staging"
    )
    await driver.copy_records_to_table(
        "tm_usage_staging",
        columns=_EVENT_COLUMNS,
        records=[
            tuple(
                e.used_at.astimezone(UTC).replace(tzinfo=None)
                if name == "used_at"
                else getattr(e, name)
                for name in _EVENT_COLUMNS
            )
            for e in events
        ],
    )
    rows = await driver.fetch(
        f"INSERT INTO token_usage_logs ({_STAGING_COLUMNS}) "  # noqa: S608 - fixed names
        f"SELECT {_STAGING_COLUMNS} FROM tm_usage_staging "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )
    return [row["event_id"] for row in rows]


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
