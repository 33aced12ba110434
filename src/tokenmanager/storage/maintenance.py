"""SQL for usage upkeep: retention (deleting old rows in bounded chunks, each its own short
transaction, so no long lock is held) and rebuilding the rollups from the raw rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.database import Database
from tokenmanager.storage.schema import (
    token_usage_logs,
    usage_cost_hourly,
    usage_daily,
    usage_hourly,
    usage_spend,
)
from tokenmanager.storage.usage import write_cost_rollup, write_rollup
from tokenmanager.usage.costs import CostKey, CostRow, cost_key
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.rollup import RollupKey, RollupRow, fold_event

DELETE_CHUNK_ROWS = 10_000


async def delete_raw_before(
    database: Database, cutoff: datetime, chunk_rows: int = DELETE_CHUNK_ROWS
) -> int:
    """Delete raw usage rows older than `cutoff`, oldest first, `chunk_rows` per transaction."""
    deleted = 0
    while True:
        async with database.write() as connection:
            ids = (
                sa.select(token_usage_logs.c.id)
                .where(token_usage_logs.c.used_at < cutoff)
                .order_by(token_usage_logs.c.used_at)
                .limit(chunk_rows)
                .scalar_subquery()
            )
            result = await connection.execute(
                token_usage_logs.delete().where(token_usage_logs.c.id.in_(ids))
            )
        count = result.rowcount or 0
        deleted += count
        if count < chunk_rows:
            return deleted


async def delete_rollups_before(database: Database, cutoff: datetime) -> int:
    """Delete hourly, daily and per-model cost rollup rows, and spend rows, of periods that
    start before `cutoff`, one day per transaction."""
    deleted = 0
    for table, period in (
        (usage_hourly, "hour"),
        (usage_daily, "day"),
        (usage_cost_hourly, "hour"),
        (usage_spend, "period_start"),
    ):
        column = table.c[period]
        while True:
            async with database.read() as connection:
                oldest = (
                    await connection.execute(sa.select(column).order_by(column).limit(1))
                ).scalar()
            if oldest is None or oldest >= cutoff:
                break
            async with database.write() as connection:
                result = await connection.execute(
                    table.delete().where(column < min(cutoff, oldest + timedelta(days=1)))
                )
            deleted += result.rowcount or 0
    return deleted


async def rebuild_rollup_day(connection: AsyncConnection, day: datetime) -> int:
    """Recompute one UTC day of the hourly, daily and per-model cost rollups from the raw rows;
    returns the rows read. (Spend per local day and month is not rebuilt: its periods are not
    UTC days, and a month outlives the raw rows; `usage reprice` corrects it.)

    Runs in the caller's transaction. On PostgreSQL the rollup tables are locked for it, so a
    recorder writing meanwhile either is counted here (committed before) or adds its rows after
    (committed later), never both.
    """
    if connection.dialect.name == "postgresql":
        await connection.execute(
            sa.text("LOCK TABLE usage_hourly, usage_daily, usage_cost_hourly IN EXCLUSIVE MODE")
        )
    until = day + timedelta(days=1)
    await connection.execute(
        usage_hourly.delete().where(usage_hourly.c.hour >= day, usage_hourly.c.hour < until)
    )
    await connection.execute(usage_daily.delete().where(usage_daily.c.day == day))
    await connection.execute(
        usage_cost_hourly.delete().where(
            usage_cost_hourly.c.hour >= day, usage_cost_hourly.c.hour < until
        )
    )
    hourly: dict[RollupKey, RollupRow] = {}
    daily: dict[RollupKey, RollupRow] = {}
    costs: dict[CostKey, CostRow] = {}
    count = 0
    async for event in stream_raw_events(connection, day, until):
        fold_event(hourly, event, "hour")
        fold_event(daily, event, "day")
        if event.usage_source is not None:
            costs.setdefault(cost_key(event), CostRow()).add(event)
        count += 1
    await write_rollup(connection, hourly, "hour")
    await write_rollup(connection, daily, "day")
    await write_cost_rollup(connection, costs)
    return count


async def raw_span(connection: AsyncConnection) -> tuple[datetime | None, datetime | None]:
    """The oldest and newest raw usage time."""
    first = (
        await connection.execute(
            sa.select(token_usage_logs.c.used_at).order_by(token_usage_logs.c.used_at).limit(1)
        )
    ).scalar()
    last = (
        await connection.execute(
            sa.select(token_usage_logs.c.used_at)
            .order_by(token_usage_logs.c.used_at.desc())
            .limit(1)
        )
    ).scalar()
    return first, last


async def count_raw_between(connection: AsyncConnection, since: datetime, until: datetime) -> int:
    query = sa.select(sa.func.count()).where(
        token_usage_logs.c.used_at >= since, token_usage_logs.c.used_at < until
    )
    return int((await connection.execute(query)).scalar_one())


async def stream_raw_events(
    connection: AsyncConnection, since: datetime, until: datetime
) -> AsyncIterator[UsageEvent]:
    """Raw rows in [since, until) as events, oldest first, fetched in chunks."""
    query = (
        token_usage_logs.select()
        .where(token_usage_logs.c.used_at >= since, token_usage_logs.c.used_at < until)
        .order_by(token_usage_logs.c.used_at, token_usage_logs.c.id)
        .execution_options(yield_per=5000)
    )
    result = await connection.stream(query)
    async for row in result:
        yield event_of(row)


def event_of(row: Any) -> UsageEvent:
    """A raw usage row as the event it was recorded from."""
    return UsageEvent(
        token_hash=row.token_hash,
        route_path=row.route_path,
        used_at=row.used_at,
        response_status=row.response_status,
        response_time_ms=row.response_time_ms,
        event_id=row.event_id,
        token_id=row.token_id,
        ttfb_ms=row.ttfb_ms,
        ip_address=row.ip_address,
        user_agent=row.user_agent,
        request_method=row.request_method,
        error_message=row.error_message,
        bytes_in=row.bytes_in,
        bytes_out=row.bytes_out,
        failure_kind=row.failure_kind,
        source=row.source,
        team_id=row.team_id,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_prompt_tokens=row.cached_prompt_tokens,
        reasoning_tokens=row.reasoning_tokens,
        usage_source=row.usage_source,
        cost_pusd=row.cost_pusd,
    )
