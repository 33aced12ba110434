"""`/api/ingest-keys` (admin only): keys for external gateways to post usage; shown once."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import Name, ObjectId, StrictBody
from tokenmanager.ingest_keys.models import IngestKey

router = APIRouter(
    prefix="/api/ingest-keys", tags=["ingest keys"], responses=error_responses(*SIGNED_IN_ERRORS)
)


class IngestKeyCreate(StrictBody):
    name: Name


class IngestKeyOut(BaseModel):
    id: int
    name: str
    display_prefix: str
    created_at: datetime
    created_by: str
    last_used: datetime | None

    @classmethod
    def of(cls, key: IngestKey) -> IngestKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            display_prefix=key.display_prefix,
            created_at=key.created_at,
            created_by=key.created_by,
            last_used=key.last_used,
        )


class CreatedIngestKeyOut(IngestKeyOut):
    key: str = Field(repr=False)


@router.post("", status_code=201, response_model=CreatedIngestKeyOut)
async def create_ingest_key(
    body: IngestKeyCreate, actor: ActorDep, services: ServicesDep
) -> CreatedIngestKeyOut:
    created = await services.ingest_keys.create(actor, name=body.name)
    return CreatedIngestKeyOut(
        **IngestKeyOut.of(created.ingest_key).model_dump(), key=created.key_secret
    )


@router.get("", response_model=list[IngestKeyOut])
async def list_ingest_keys(actor: ActorDep, services: ServicesDep) -> list[IngestKeyOut]:
    return [IngestKeyOut.of(key) for key in await services.ingest_keys.list(actor)]


@router.delete("/{key_id}", status_code=204)
async def delete_ingest_key(key_id: ObjectId, actor: ActorDep, services: ServicesDep) -> Response:
    await services.ingest_keys.delete(actor, key_id)
    return Response(status_code=204)
