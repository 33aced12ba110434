"""SQL for the audit log and the change feed; both are written inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.storage.database import CHANGED_FLAG
from tokenmanager.storage.schema import audit_log, change_feed


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_ip: str | None


async def create_audit_entry(
    connection: AsyncConnection,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: object,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """`before` / `after` must already be masked: callers pass public views, never secrets."""
    await connection.execute(
        audit_log.insert().values(
            at=utcnow(),
            actor=actor.name,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            before=before,
            after=after,
            client_ip=actor.client_ip,
        )
    )


async def list_audit_entries(
    connection: AsyncConnection,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEntry]:
    """Newest first."""
    query = audit_log.select().order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
    for column, value in (
        (audit_log.c.actor, actor),
        (audit_log.c.action, action),
        (audit_log.c.target_type, target_type),
        (audit_log.c.target_id, target_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if until is not None:
        query = query.where(audit_log.c.at < until)
    rows = await connection.execute(query)
    return [AuditEntry(**row._mapping) for row in rows]


async def append_change(connection: AsyncConnection, kind: str, key: object) -> None:
    """Tell gateways that a token or route changed (they poll `read_change_version`)."""
    await connection.execute(change_feed.insert().values(at=utcnow(), kind=kind, key=str(key)))
    connection.info[CHANGED_FLAG] = True


async def read_change_version(connection: AsyncConnection) -> int:
    return int((await connection.execute(sa.select(sa.func.max(change_feed.c.id)))).scalar() or 0)
