"""SQL for cost figures: the per-model cost rollup (LLM calls only) summed over a window by
model, team, token or route."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.analytics.costs import CostFigures
from tokenmanager.analytics.windows import Window
from tokenmanager.storage.schema import COST_ROLLUP_COLUMNS, usage_cost_hourly

# group_by of /api/usage/costs -> the rollup column
COST_GROUP_COLUMNS = {
    "model": "model",
    "team": "team_id",
    "token": "token_id",
    "route": "route_path",
}


async def read_costs(
    connection: AsyncConnection,
    window: Window,
    group_by: str,
    team_ids: Collection[str] | None,
) -> list[tuple[Any, CostFigures]]:
    """Cost figures per value of `group_by` (model, team, token, route) over the window's
    hours; an unknown value is '' (0 for a token). `team_ids` (None: all) filters on the team
    charged at call time. Unordered."""
    table = usage_cost_hourly
    key = table.c[COST_GROUP_COLUMNS[group_by]]
    query = (
        sa.select(
            key.label("key"),
            # PostgreSQL sums bigints into numeric: cast back to plain integers.
            *(
                sa.cast(sa.func.sum(table.c[name]), sa.BigInteger).label(name)
                for name in COST_ROLLUP_COLUMNS
            ),
        )
        .where(table.c.hour >= window.since, table.c.hour < window.until)
        .group_by(key)
    )
    if team_ids is not None:
        query = query.where(table.c.team_id.in_(list(team_ids)))
    return [
        (
            row.key,
            CostFigures(**{name: int(row._mapping[name] or 0) for name in COST_ROLLUP_COLUMNS}),
        )
        for row in await connection.execute(query)
    ]
