"""`GET /api/audit` (admin only): the audit log, newest first, filterable."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import Offset, UTCDatetime
from tokenmanager.errors import InvalidInputError

router = APIRouter(
    prefix="/api/audit", tags=["audit"], responses=error_responses(*SIGNED_IN_ERRORS)
)


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_ip: str | None


@router.get("", response_model=list[AuditEntryOut])
async def list_audit_entries(
    actor: ActorDep,
    services: ServicesDep,
    actor_name: Annotated[str | None, Query(alias="actor", max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[AuditEntryOut]:
    if since and until and since >= until:
        raise InvalidInputError("since", "must be before until")
    entries = await services.audit.list(
        actor,
        actor_name=actor_name,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return [AuditEntryOut.model_validate(entry, from_attributes=True) for entry in entries]
