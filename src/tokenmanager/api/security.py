"""`/api/security/*`: findings (list with filters, read, acknowledge, resolve, reinstate a
suspended token), webhook destinations (create, list, delete, send a test, deliveries) and an
on-demand detector run. Viewers see their teams' tokens' findings; the rest is admin-only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import Name, ObjectId, ObjectIdQuery, Offset, StrictBody, UTCDatetime
from tokenmanager.errors import NotFoundError
from tokenmanager.security.models import DetectorKind, Finding, FindingStatus, Severity

router = APIRouter(
    prefix="/api/security", tags=["security audit"], responses=error_responses(*SIGNED_IN_ERRORS)
)


class FindingOut(BaseModel):
    id: int
    kind: str
    severity: str
    status: str
    token_id: int | None
    team_id: str | None
    route_path: str | None
    ip_address: str | None
    evidence: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    created_at: datetime
    updated_at: datetime
    status_changed_by: str | None
    response: dict[str, Any] | None

    @classmethod
    def of(cls, finding: Finding) -> FindingOut:
        return cls.model_validate(finding, from_attributes=True)


class FindingPage(BaseModel):
    findings: list[FindingOut]
    total: int
    limit: int
    offset: int


@router.get("/findings", response_model=FindingPage)
async def list_findings(
    actor: ActorDep,
    services: ServicesDep,
    status: FindingStatus | None = None,
    kind: DetectorKind | None = None,
    min_severity: Severity | None = None,
    token_id: ObjectIdQuery = None,
    route_path: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> FindingPage:
    """Findings, most recently seen first. `since`/`until` select findings whose span
    overlaps the window."""
    findings, total = await services.security.findings.list(
        actor, status=status, kind=kind, min_severity=min_severity, token_id=token_id,
        route_path=route_path, since=since, until=until, limit=limit, offset=offset,
    )  # fmt: skip
    return FindingPage(
        findings=[FindingOut.of(f) for f in findings], total=total, limit=limit, offset=offset
    )


@router.get("/findings/{finding_id}", response_model=FindingOut)
async def read_finding(finding_id: ObjectId, actor: ActorDep, services: ServicesDep) -> FindingOut:
    finding = await services.security.findings.read(actor, finding_id)
    if finding is None:
        raise NotFoundError("finding not found")
    return FindingOut.of(finding)


@router.post("/findings/{finding_id}/acknowledge", response_model=FindingOut)
async def acknowledge_finding(
    finding_id: ObjectId, actor: ActorDep, services: ServicesDep
) -> FindingOut:
    return FindingOut.of(await services.security.findings.acknowledge(actor, finding_id))


@router.post("/findings/{finding_id}/resolve", response_model=FindingOut)
async def resolve_finding(
    finding_id: ObjectId, actor: ActorDep, services: ServicesDep
) -> FindingOut:
    return FindingOut.of(await services.security.findings.resolve(actor, finding_id))


@router.post("/findings/{finding_id}/reinstate", response_model=FindingOut)
async def reinstate_token(
    finding_id: ObjectId, actor: ActorDep, services: ServicesDep
) -> FindingOut:
    """Undo the automatic suspension of the finding's token (admin)."""
    return FindingOut.of(await services.security.findings.reinstate(actor, finding_id))


class RunOut(BaseModel):
    slice_start: datetime
    slice_end: datetime
    rows: int
    observations: int
    created: list[int]
    updated: list[int]
    is_caught_up: bool


@router.post("/run", response_model=RunOut)
async def run_detectors(actor: ActorDep, services: ServicesDep) -> RunOut:
    """Run the detectors over the next slice now (admin); the background loop does the same
    every TOKENMANAGER_SECURITY_DETECT_INTERVAL_S."""
    actor.require_admin()
    result = await services.security.monitor.run_once()
    return RunOut.model_validate(result, from_attributes=True)


# -- webhooks ------------------------------------------------------------------------------


class WebhookCreate(StrictBody):
    name: Name
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    payload_format: Annotated[str, Field(pattern="^(json|slack)$")] = "json"
    min_severity: Severity = Severity.HIGH
    cooldown_s: Annotated[int, Field(ge=0, le=7 * 86400)] = 3600
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None


class WebhookOut(BaseModel):
    id: int
    name: str
    url_display: str
    payload_format: str
    min_severity: str
    cooldown_s: int
    is_enabled: bool
    created_at: datetime
    updated_at: datetime


class CreatedWebhookOut(WebhookOut):
    secret: str = Field(description="The signing secret; shown only in this answer.")


class AttemptOut(BaseModel):
    id: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    finding_id: int | None
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any]
    attempt_log: list[AttemptOut]


@router.post("/webhooks", status_code=201, response_model=CreatedWebhookOut)
async def create_webhook(
    body: WebhookCreate, actor: ActorDep, services: ServicesDep
) -> CreatedWebhookOut:
    created = await services.security.webhooks.create(
        actor, name=body.name, url=body.url, payload_format=body.payload_format,
        min_severity=body.min_severity, cooldown_s=body.cooldown_s, secret=body.secret,
    )  # fmt: skip
    return CreatedWebhookOut(**created.webhook, secret=created.secret)


@router.get("/webhooks", response_model=list[WebhookOut])
async def list_webhooks(actor: ActorDep, services: ServicesDep) -> list[WebhookOut]:
    return [WebhookOut(**row) for row in await services.security.webhooks.list(actor)]


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: ObjectId, actor: ActorDep, services: ServicesDep) -> Response:
    await services.security.webhooks.delete(actor, webhook_id)
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/test", response_model=DeliveryOut)
async def send_test(webhook_id: ObjectId, actor: ActorDep, services: ServicesDep) -> DeliveryOut:
    """Send a signed test alert now; the answer holds the delivery and its attempt."""
    return DeliveryOut(**await services.security.webhooks.send_test(actor, webhook_id))


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut])
async def list_deliveries(
    webhook_id: ObjectId,
    actor: ActorDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeliveryOut]:
    rows = await services.security.webhooks.deliveries(actor, webhook_id, limit)
    return [DeliveryOut(**row) for row in rows]
