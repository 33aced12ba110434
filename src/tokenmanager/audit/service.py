"""Reading the audit log (admin only). Entries are written by the services that change things."""

from __future__ import annotations

from datetime import datetime

from tokenmanager.access.actor import Actor
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage.audit import AuditEntry
from tokenmanager.storage.database import Database


class AuditService:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def list(
        self,
        actor: Actor,
        *,
        actor_name: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditEntry]:
        actor.require_admin()
        async with self._db.read() as connection:
            return await audit_sql.list_audit_entries(
                connection,
                actor=actor_name,
                action=action,
                target_type=target_type,
                target_id=target_id,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
