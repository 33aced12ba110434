"""SQL for users, their team memberships and their sessions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.access.actor import Role
from tokenmanager.storage.schema import sessions, user_teams, users
from tokenmanager.users.models import User


async def _team_ids_by_user(
    connection: AsyncConnection, user_ids: Sequence[int]
) -> dict[int, tuple[str, ...]]:
    rows = await connection.execute(
        sa.select(user_teams.c.user_id, user_teams.c.team_id)
        .where(user_teams.c.user_id.in_(user_ids))
        .order_by(user_teams.c.team_id)
    )
    team_ids: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        team_ids[row.user_id].append(row.team_id)
    return {user_id: tuple(ids) for user_id, ids in team_ids.items()}


def _to_user(row: Any, team_ids: tuple[str, ...]) -> User:
    return User(
        id=row.id,
        username=row.username,
        role=Role(row.role),
        team_ids=team_ids,
        created_at=row.created_at,
    )


async def create_user(
    connection: AsyncConnection, values: dict[str, Any], team_ids: Sequence[str]
) -> User:
    row = (await connection.execute(users.insert().values(**values).returning(*users.c))).one()
    await set_user_teams(connection, row.id, team_ids)
    return _to_user(row, tuple(sorted(team_ids)))


async def set_user_teams(
    connection: AsyncConnection, user_id: int, team_ids: Sequence[str]
) -> None:
    await connection.execute(user_teams.delete().where(user_teams.c.user_id == user_id))
    if team_ids:
        await connection.execute(
            user_teams.insert(), [{"user_id": user_id, "team_id": t} for t in team_ids]
        )


async def read_user(connection: AsyncConnection, user_id: int) -> User | None:
    row = (await connection.execute(users.select().where(users.c.id == user_id))).first()
    if row is None:
        return None
    return _to_user(row, (await _team_ids_by_user(connection, [row.id])).get(row.id, ()))


async def read_user_by_username(
    connection: AsyncConnection, username: str
) -> tuple[User, str] | None:
    """The user and their password hash, for login only."""
    row = (await connection.execute(users.select().where(users.c.username == username))).first()
    if row is None:
        return None
    team_ids = (await _team_ids_by_user(connection, [row.id])).get(row.id, ())
    return _to_user(row, team_ids), row.password_hash


async def list_users(connection: AsyncConnection) -> list[User]:
    rows = list(await connection.execute(users.select().order_by(users.c.id)))
    team_ids = await _team_ids_by_user(connection, [row.id for row in rows])
    return [_to_user(row, team_ids.get(row.id, ())) for row in rows]


async def update_user(connection: AsyncConnection, user_id: int, values: dict[str, Any]) -> None:
    if values:
        await connection.execute(users.update().where(users.c.id == user_id).values(**values))


async def delete_user(connection: AsyncConnection, user_id: int) -> None:
    await connection.execute(users.delete().where(users.c.id == user_id))


async def count_admins_for_update(connection: AsyncConnection) -> int:
    """Admins, with their rows locked until the transaction ends (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serialises writers), so two demotions cannot both pass a check."""
    query = sa.select(users.c.id).where(users.c.role == Role.ADMIN.value).with_for_update()
    return len((await connection.execute(query)).all())


async def create_session(
    connection: AsyncConnection,
    session_hash: str,
    user_id: int,
    now: datetime,
    expires_at: datetime,
) -> None:
    await connection.execute(
        sessions.insert().values(
            session_hash=session_hash, user_id=user_id, created_at=now, expires_at=expires_at
        )
    )


async def read_session_user(
    connection: AsyncConnection, session_hash: str, now: datetime
) -> User | None:
    row = (
        await connection.execute(
            sa.select(sessions.c.user_id).where(
                sessions.c.session_hash == session_hash, sessions.c.expires_at > now
            )
        )
    ).first()
    return await read_user(connection, row.user_id) if row else None


async def delete_session(connection: AsyncConnection, session_hash: str) -> None:
    await connection.execute(sessions.delete().where(sessions.c.session_hash == session_hash))


async def delete_sessions_of_user(connection: AsyncConnection, user_id: int) -> None:
    await connection.execute(sessions.delete().where(sessions.c.user_id == user_id))


async def delete_expired_sessions(connection: AsyncConnection, now: datetime) -> None:
    await connection.execute(sessions.delete().where(sessions.c.expires_at <= now))
