"""SQL for `tokenmanager usage reprice`: recompute the stored cost of LLM calls in a time range
at today's prices, and move the rollups' cost sums, the per-model cost rollup and the spend by
exactly the change, chunk by chunk, each chunk one transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.calendar import PERIODS
from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.storage.database import Database
from tokenmanager.storage.maintenance import event_of
from tokenmanager.storage.schema import (
    token_usage_logs,
    usage_cost_hourly,
    usage_daily,
    usage_hourly,
)
from tokenmanager.storage.usage import add_spend
from tokenmanager.usage.costs import PeriodCutter, SpendKey, cost_key, spend_subjects
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.rollup import day_of, hour_of

REPRICE_CHUNK_ROWS = 2000
CostFor = Callable[[LlmUsage], int | None]


@dataclass(slots=True)
class RepriceResult:
    calls: int = 0  # LLM calls read
    changed: int = 0  # calls whose cost changed


def _usage_of(event: UsageEvent) -> LlmUsage:
    return LlmUsage(
        model=event.model,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_prompt_tokens=event.cached_prompt_tokens,
        reasoning_tokens=event.reasoning_tokens,
        usage_source=UsageSource(event.usage_source or UsageSource.MISSING),
    )


def _selection(since: datetime, until: datetime, model: str | None) -> Any:
    query = token_usage_logs.select().where(
        token_usage_logs.c.used_at >= since,
        token_usage_logs.c.used_at < until,
        token_usage_logs.c.usage_source.is_not(None),
    )
    if model is not None:
        query = query.where(token_usage_logs.c.model == model)
    return query


async def count_llm_calls(
    connection: AsyncConnection, since: datetime, until: datetime, model: str | None
) -> int:
    subquery = _selection(since, until, model).subquery()
    return int(
        (await connection.execute(sa.select(sa.func.count()).select_from(subquery))).scalar_one()
    )


Deltas = dict[tuple[Any, ...], list[int]]  # key -> [cost_pusd delta, unpriced_calls delta]


async def _apply(
    connection: AsyncConnection, table: sa.Table, keys: tuple[str, ...], deltas: Deltas
) -> None:
    """Move the cost sums of existing rollup rows, in key order (no deadlock between writers)."""
    changes = [
        {f"k_{name}": value for name, value in zip(keys, key, strict=True)}
        | {"d_cost": cost, "d_unpriced": unpriced}
        for key, (cost, unpriced) in sorted(deltas.items())
        if cost or unpriced
    ]
    if not changes:
        return
    statement = (
        table.update()
        .where(*(table.c[name] == sa.bindparam(f"k_{name}") for name in keys))
        .values(
            cost_pusd=table.c.cost_pusd + sa.bindparam("d_cost"),
            unpriced_calls=table.c.unpriced_calls + sa.bindparam("d_unpriced"),
        )
    )
    await connection.execute(statement, changes)


async def _reprice_chunk(
    connection: AsyncConnection,
    query: Any,
    after: tuple[datetime, int] | None,
    cost_for: CostFor,
    cutter: PeriodCutter,
    chunk_rows: int,
) -> tuple[int, int, tuple[datetime, int] | None]:
    """One chunk (keyset on used_at, id): (calls read, costs changed, where to go on)."""
    if after is not None:
        at, row_id = after
        used_at, ident = token_usage_logs.c.used_at, token_usage_logs.c.id
        query = query.where(sa.or_(used_at > at, sa.and_(used_at == at, ident > row_id)))
    query = query.order_by(token_usage_logs.c.used_at, token_usage_logs.c.id).limit(chunk_rows)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()  # two reprices at once must not both move a sum
    rows = list(await connection.execute(query))
    hourly: Deltas = defaultdict(lambda: [0, 0])
    daily: Deltas = defaultdict(lambda: [0, 0])
    costs: Deltas = defaultdict(lambda: [0, 0])
    spend: dict[SpendKey, list[int]] = defaultdict(lambda: [0, 0])
    updates = []
    for row in rows:
        event = event_of(row)
        old, new = event.cost_pusd, cost_for(_usage_of(event))
        if old == new:
            continue
        updates.append({"row_id": row.id, "new_cost": new})
        cost_delta = (new or 0) - (old or 0)
        unpriced_delta = (new is None) - (old is None)
        rollup_key = (event.token_hash, event.route_path or "", event.status_class)
        for deltas, key in (
            (hourly, (hour_of(event.used_at), *rollup_key)),
            (daily, (day_of(event.used_at), *rollup_key)),
            (costs, cost_key(event)),
        ):
            deltas[key][0] += cost_delta
            deltas[key][1] += unpriced_delta
        for period in PERIODS:
            start = cutter.start(period, event.used_at)
            for scope, subject in spend_subjects(event.token_id, event.team_id):
                entry = spend[(scope, subject, period, start)]
                entry[0] += cost_delta
                entry[1] += (new is not None) - (old is not None)
    if updates:
        await connection.execute(
            token_usage_logs.update()
            .where(token_usage_logs.c.id == sa.bindparam("row_id"))
            .values(cost_pusd=sa.bindparam("new_cost")),
            updates,
        )
        await _apply(
            connection, usage_hourly, ("hour", "token_hash", "route_path", "status_class"), hourly
        )
        await _apply(
            connection, usage_daily, ("day", "token_hash", "route_path", "status_class"), daily
        )
        await _apply(
            connection,
            usage_cost_hourly,
            ("hour", "token_id", "team_id", "route_path", "model"),
            costs,
        )
        await add_spend(connection, {key: value for key, value in spend.items() if any(value)})
    last = (rows[-1].used_at, rows[-1].id) if len(rows) == chunk_rows else None
    return len(rows), len(updates), last


async def reprice(
    database: Database,
    since: datetime,
    until: datetime,
    *,
    cost_for: CostFor,
    zone: ZoneInfo,
    model: str | None = None,
    chunk_rows: int = REPRICE_CHUNK_ROWS,
    on_chunk: Callable[[int], None] = lambda calls: None,
) -> RepriceResult:
    """Recompute the cost of the LLM calls in [since, until) (only `model`'s when given) with
    `cost_for` (today's prices), and move every sum that holds those costs by the change.
    Idempotent: a second run at the same prices changes nothing."""
    result = RepriceResult()
    cutter = PeriodCutter(zone)
    query = _selection(since, until, model)
    after: tuple[datetime, int] | None = None
    while True:
        async with database.write() as connection:
            calls, changed, after = await _reprice_chunk(
                connection, query, after, cost_for, cutter, chunk_rows
            )
        result.calls += calls
        result.changed += changed
        on_chunk(calls)
        if after is None:
            return result
