"""Ingest keys (admin only): `tik_` + 43 random URL-safe characters, shown once, stored as
SHA-256. `verify` is what the ingestion endpoint calls."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.errors import NotFoundError
from tokenmanager.ingest_keys.models import IngestKey
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import ingest_keys as ingest_keys_sql
from tokenmanager.storage.database import Database

INGEST_KEY_PREFIX = "tik_"


@dataclass(frozen=True, slots=True)
class CreatedIngestKey:
    ingest_key: IngestKey
    key_secret: str = field(repr=False)


def hash_ingest_key(key_secret: str) -> str:
    return hashlib.sha256(key_secret.encode("utf-8")).hexdigest()


def _audit_view(key: IngestKey) -> dict[str, object]:
    return {"id": key.id, "name": key.name, "display_prefix": key.display_prefix}


class IngestKeyService:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(self, actor: Actor, *, name: str) -> CreatedIngestKey:
        actor.require_admin()
        key_secret = INGEST_KEY_PREFIX + secrets.token_urlsafe(32)
        async with self._db.write() as connection:
            key = await ingest_keys_sql.create_ingest_key(
                connection,
                {
                    "name": name,
                    "key_hash": hash_ingest_key(key_secret),
                    "display_prefix": key_secret[:10],
                    "created_at": utcnow(),
                    "created_by": actor.name,
                },
            )
            await audit_sql.create_audit_entry(
                connection, actor, "ingest_key.create", "ingest_key", key.id, after=_audit_view(key)
            )
        return CreatedIngestKey(ingest_key=key, key_secret=key_secret)

    async def list(self, actor: Actor) -> list[IngestKey]:
        actor.require_admin()
        async with self._db.read() as connection:
            return await ingest_keys_sql.list_ingest_keys(connection)

    async def delete(self, actor: Actor, key_id: int) -> None:
        actor.require_admin()
        async with self._db.write() as connection:
            key = await ingest_keys_sql.read_ingest_key(connection, key_id)
            if key is None:
                raise NotFoundError("ingest key not found")
            await ingest_keys_sql.delete_ingest_key(connection, key_id)
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "ingest_key.delete",
                "ingest_key",
                key_id,
                before=_audit_view(key),
            )

    async def verify(self, key_secret: str) -> IngestKey | None:
        """The key, or None. The lookup is by hash, so no comparison leaks timing."""
        if not key_secret.startswith(INGEST_KEY_PREFIX):
            return None
        async with self._db.read() as connection:
            return await ingest_keys_sql.read_ingest_key_by_hash(
                connection, hash_ingest_key(key_secret)
            )
