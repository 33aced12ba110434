"""SQL for ingest keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.ingest_keys.models import IngestKey
from tokenmanager.storage.schema import ingest_keys


def _to_key(row: Any) -> IngestKey:
    return IngestKey(
        id=row.id,
        name=row.name,
        display_prefix=row.display_prefix,
        created_at=row.created_at,
        created_by=row.created_by,
        last_used=row.last_used,
    )


async def create_ingest_key(connection: AsyncConnection, values: dict[str, Any]) -> IngestKey:
    result = await connection.execute(
        ingest_keys.insert().values(**values).returning(*ingest_keys.c)
    )
    return _to_key(result.one())


async def read_ingest_key(connection: AsyncConnection, key_id: int) -> IngestKey | None:
    row = (await connection.execute(ingest_keys.select().where(ingest_keys.c.id == key_id))).first()
    return _to_key(row) if row else None


async def read_ingest_key_by_hash(connection: AsyncConnection, key_hash: str) -> IngestKey | None:
    query = ingest_keys.select().where(ingest_keys.c.key_hash == key_hash)
    row = (await connection.execute(query)).first()
    return _to_key(row) if row else None


async def list_ingest_keys(connection: AsyncConnection) -> list[IngestKey]:
    return [
        _to_key(row)
        for row in await connection.execute(ingest_keys.select().order_by(ingest_keys.c.id))
    ]


async def delete_ingest_key(connection: AsyncConnection, key_id: int) -> None:
    await connection.execute(ingest_keys.delete().where(ingest_keys.c.id == key_id))
