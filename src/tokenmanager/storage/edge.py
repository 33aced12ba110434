"""SQL the edge sync needs: token rows with their team's limits (all, or some ids) and route
rows. Read-only; called by `tokenmanager edge sync`, never per call."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.gateway import TOKEN_RECORD_COLUMNS
from tokenmanager.storage.schema import routes, teams, tokens


async def list_edge_token_rows(
    connection: AsyncConnection, token_ids: Collection[int] | None = None
) -> list[sa.Row[Any]]:
    """Token rows (with team limits) ordered by id; `token_ids=None` means every token."""
    query = (
        sa.select(*TOKEN_RECORD_COLUMNS)
        .join(teams, teams.c.id == tokens.c.team_id)
        .order_by(tokens.c.id)
    )
    if token_ids is not None:
        query = query.where(tokens.c.id.in_(list(token_ids)))
    return list(await connection.execute(query))


async def list_edge_route_rows(connection: AsyncConnection) -> list[sa.Row[Any]]:
    return list(await connection.execute(routes.select().order_by(routes.c.path_prefix)))
