"""SQL the edge sync needs: token rows with their team's limits (all, or some ids) and route
rows. Read-only; called by `tokenmanager edge sync`, never per call."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import routes, teams, tokens

_TOKEN_COLUMNS = (
    tokens.c.id,
    tokens.c.team_id,
    tokens.c.token_hash,
    tokens.c.scopes,
    tokens.c.expires_at,
    tokens.c.revoked_at,
    tokens.c.previous_token_hash,
    tokens.c.previous_hash_expires_at,
    tokens.c.rate_limit_per_s,
    tokens.c.rate_limit_per_min,
    teams.c.rate_limit_per_s.label("team_rate_limit_per_s"),
    teams.c.rate_limit_per_min.label("team_rate_limit_per_min"),
)


async def list_edge_token_rows(
    connection: AsyncConnection, token_ids: Collection[int] | None = None
) -> list[sa.Row[Any]]:
    """Token rows (with team limits) ordered by id; `token_ids=None` means every token."""
    query = (
        sa.select(*_TOKEN_COLUMNS).join(teams, teams.c.id == tokens.c.team_id).order_by(tokens.c.id)
    )
    if token_ids is not None:
        query = query.where(tokens.c.id.in_(list(token_ids)))
    return list(await connection.execute(query))


async def list_edge_route_rows(connection: AsyncConnection) -> list[sa.Row[Any]]:
    return list(await connection.execute(routes.select().order_by(routes.c.path_prefix)))
