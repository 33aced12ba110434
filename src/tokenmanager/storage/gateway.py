"""SQL the gateway needs: token records by hash, the route table, imported hashes, the price
table and the change feed. Called on cache misses and on changes, never per request."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import change_feed, routes, teams, tokens

# What a gateway (ours, or the edge Worker's KV records) knows of a token: scopes, state,
# expiry, its own and its team's limits and budgets.
TOKEN_RECORD_COLUMNS = (
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
    tokens.c.budget_micro_usd,
    tokens.c.budget_period,
    teams.c.budget_micro_usd.label("team_budget_micro_usd"),
    teams.c.budget_period.label("team_budget_period"),
)


async def read_token_by_hash(connection: AsyncConnection, token_hash: str) -> Any:
    """The token whose current or previous (rotated) hash is `token_hash`, with its team's
    rate limits and budgets (micro-dollars per "day" | "month"; NULL: none), or None."""
    query = (
        sa.select(*TOKEN_RECORD_COLUMNS)
        .join(teams, teams.c.id == tokens.c.team_id)
        .where(
            sa.or_(tokens.c.token_hash == token_hash, tokens.c.previous_token_hash == token_hash)
        )
    )
    return (await connection.execute(query)).first()


async def list_imported_hashes(connection: AsyncConnection) -> set[str]:
    query = sa.select(tokens.c.token_hash).where(tokens.c.is_imported.is_(True))
    return set((await connection.execute(query)).scalars())


async def list_route_rows(connection: AsyncConnection) -> list[sa.Row[Any]]:
    return list(await connection.execute(routes.select()))


async def read_changes_since(
    connection: AsyncConnection, after_id: int, limit: int = 1000
) -> list[sa.Row[Any]]:
    query = (
        sa.select(change_feed.c.id, change_feed.c.kind, change_feed.c.key)
        .where(change_feed.c.id > after_id)
        .order_by(change_feed.c.id)
        .limit(limit)
    )
    return list(await connection.execute(query))
