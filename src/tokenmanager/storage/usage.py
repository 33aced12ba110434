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


_STAGING_READY = "tokenmanager_usage_staging"
_STAGING_COLUMNS = ", ".join(_EVENT_COLUMNS)


async def _copy_new_rows(connection: AsyncConnection, events: list[UsageEvent]) -> list[str]:
    """PostgreSQL: COPY the batch into a session-private staging table, then move the rows
    whose event_id is new with one INSERT … SELECT. COPY skips per-row statement work, which
    is most of the client's cost."""
    fairy = await connection.get_raw_connection()
    driver: Any = fairy.driver_connection
    if not fairy.info.get(_STAGING_READY):
        await driver.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS tm_usage_staging ON COMMIT DELETE ROWS AS "  # noqa: S608 - fixed names
            f"SELECT {_STAGING_COLUMNS} FROM token_usage_logs WITH NO DATA"
        )
        fairy.info[_STAGING_READY] = True
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
    await driver.execute("TRUNCATE tm_usage_staging")
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
    rows = [row.as_values(key, period) for key, row in sorted(rollup.items())]
    if rows:
        await connection.execute(_rollup_upsert(connection, table, period), rows)


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
