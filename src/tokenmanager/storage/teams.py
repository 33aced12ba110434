"""SQL for teams."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import teams
from tokenmanager.teams.models import Team


def _to_team(row: Any) -> Team:
    return Team(
        id=row.id,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        rate_limit_per_s=row.rate_limit_per_s,
        rate_limit_per_min=row.rate_limit_per_min,
        budget_micro_usd=row.budget_micro_usd,
        budget_period=row.budget_period,
    )


async def create_team(connection: AsyncConnection, values: dict[str, Any]) -> Team:
    result = await connection.execute(teams.insert().values(**values).returning(*teams.c))
    return _to_team(result.one())


async def read_team(connection: AsyncConnection, team_id: str) -> Team | None:
    row = (await connection.execute(teams.select().where(teams.c.id == team_id))).first()
    return _to_team(row) if row else None


async def list_teams(
    connection: AsyncConnection, team_ids: Collection[str] | None = None
) -> list[Team]:
    query = teams.select().order_by(teams.c.id)
    if team_ids is not None:
        query = query.where(teams.c.id.in_(list(team_ids)))
    return [_to_team(row) for row in await connection.execute(query)]


async def update_team(connection: AsyncConnection, team_id: str, values: dict[str, Any]) -> Team:
    result = await connection.execute(
        teams.update().where(teams.c.id == team_id).values(**values).returning(*teams.c)
    )
    return _to_team(result.one())


async def delete_team(connection: AsyncConnection, team_id: str) -> None:
    await connection.execute(teams.delete().where(teams.c.id == team_id))
