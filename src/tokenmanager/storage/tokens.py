"""SQL for tokens. Rows come back as `Token`; the hash columns never leave through `Token`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import tokens
from tokenmanager.tokens.models import Token, TokenState


def _to_token(row: sa.Row[Any]) -> Token:
    return Token(
        id=row.id,
        name=row.name,
        team_id=row.team_id,
        display_prefix=row.display_prefix,
        scopes=tuple(row.scopes),
        description=row.description,
        metadata=dict(row.metadata),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used=row.last_used,
        previous_hash_expires_at=row.previous_hash_expires_at,
        is_imported=row.is_imported,
        rate_limit_per_s=row.rate_limit_per_s,
        rate_limit_per_min=row.rate_limit_per_min,
        budget_micro_usd=row.budget_micro_usd,
        budget_period=row.budget_period,
    )


async def create_token(connection: AsyncConnection, values: dict[str, Any]) -> Token:
    result = await connection.execute(tokens.insert().values(**values).returning(*tokens.c))
    return _to_token(result.one())


async def read_token(connection: AsyncConnection, token_id: int) -> Token | None:
    row = (await connection.execute(tokens.select().where(tokens.c.id == token_id))).first()
    return _to_token(row) if row else None


async def read_token_hashes(connection: AsyncConnection, token_id: int) -> tuple[str, str | None]:
    """(token_hash, previous_token_hash) of an existing token; KeyError if there is none."""
    row = (
        await connection.execute(
            sa.select(tokens.c.token_hash, tokens.c.previous_token_hash).where(
                tokens.c.id == token_id
            )
        )
    ).first()
    if row is None:
        raise KeyError(token_id)
    return row.token_hash, row.previous_token_hash


async def list_tokens(
    connection: AsyncConnection,
    *,
    now: datetime,
    team_ids: Sequence[str] | None = None,
    state: TokenState | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[Token]:
    """Tokens ordered by id; `team_ids=None` means every team."""
    query = tokens.select().order_by(tokens.c.id).limit(limit).offset(offset)
    if team_ids is not None:
        query = query.where(tokens.c.team_id.in_(team_ids))
    if state is TokenState.REVOKED:
        query = query.where(tokens.c.revoked_at.is_not(None))
    elif state is TokenState.EXPIRED:
        query = query.where(tokens.c.revoked_at.is_(None), tokens.c.expires_at <= now)
    elif state is TokenState.ACTIVE:
        query = query.where(
            tokens.c.revoked_at.is_(None),
            sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
        )
    return [_to_token(row) for row in await connection.execute(query)]


async def update_token(connection: AsyncConnection, token_id: int, values: dict[str, Any]) -> Token:
    result = await connection.execute(
        tokens.update().where(tokens.c.id == token_id).values(**values).returning(*tokens.c)
    )
    return _to_token(result.one())


async def delete_token(connection: AsyncConnection, token_id: int) -> None:
    await connection.execute(tokens.delete().where(tokens.c.id == token_id))


async def count_tokens_for_team(connection: AsyncConnection, team_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(tokens).where(tokens.c.team_id == team_id)
    return int((await connection.execute(query)).scalar_one())
