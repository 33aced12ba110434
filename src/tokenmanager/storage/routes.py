"""SQL for routes. Rows carry the credential only as ciphertext; callers decrypt."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import routes


async def create_route(connection: AsyncConnection, values: dict[str, Any]) -> sa.Row[Any]:
    return (await connection.execute(routes.insert().values(**values).returning(*routes.c))).one()


async def read_route(connection: AsyncConnection, route_id: int) -> sa.Row[Any] | None:
    return (await connection.execute(routes.select().where(routes.c.id == route_id))).first()


async def read_route_by_prefix(connection: AsyncConnection, path_prefix: str) -> sa.Row[Any] | None:
    query = routes.select().where(routes.c.path_prefix == path_prefix)
    return (await connection.execute(query)).first()


async def list_routes(connection: AsyncConnection) -> list[sa.Row[Any]]:
    return list(await connection.execute(routes.select().order_by(routes.c.path_prefix)))


async def update_route(
    connection: AsyncConnection, route_id: int, values: dict[str, Any]
) -> sa.Row[Any]:
    query = routes.update().where(routes.c.id == route_id).values(**values).returning(*routes.c)
    return (await connection.execute(query)).one()


async def delete_route(connection: AsyncConnection, route_id: int) -> None:
    await connection.execute(routes.delete().where(routes.c.id == route_id))
