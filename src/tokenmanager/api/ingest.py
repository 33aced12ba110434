"""Usage ingestion for external gateways: `POST /api/usage-log` (the seed's body, answered with
`{"status": "logged"}`) and `POST /api/usage-log/batch` (a JSON array or NDJSON). Both need an
ingest key (`X-Ingest-Key` or `Authorization: Bearer tik_…`) unless the operator turned on open
ingestion. Accepted records go through the same recorder as the gateway's calls.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tokenmanager.api.auth import ServicesDep
from tokenmanager.api.errors import FieldError, error_response, error_responses
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.usage.ingest import IngestError, parse_usage_record

# 401: no or a wrong ingest key; 413: body or batch too large; 422: a bad record;
# 503: the usage queue is full (Retry-After).
router = APIRouter(
    prefix="/api/usage-log",
    tags=["usage ingestion"],
    responses=error_responses(401, 413, 422, 503),
)

SINGLE_RECORD_MAX_BYTES = 64 * 1024
EXAMPLE_RECORD = {
    "token_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "route": "/api/openai",
    "timestamp": 1730800000000,
    "response_status": 200,
    "response_time_ms": 1500,
    "ip_address": "1.2.3.4",
    "user_agent": "n8n/1.0",
    "request_method": "POST",
    "error_message": None,
    "model": "gpt-4o-mini-2024-07-18",
    "prompt_tokens": 1200,
    "completion_tokens": 350,
}


class UsageLogged(BaseModel):
    status: Literal["logged"]
    event_id: str


class RejectedRecord(BaseModel):
    index: int
    fields: list[FieldError]


class BatchLogged(BaseModel):
    accepted: int
    rejected: int
    errors: list[RejectedRecord]


async def require_ingest_key(request: Request, services: ServicesDep) -> None:
    if services.settings.ingest_open:
        return
    key = request.headers.get("x-ingest-key")
    if key is None:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        key = credential.strip() if scheme.lower() == "bearer" else None
    if not key or await services.ingest_keys.verify(key) is None:
        raise HTTPException(
            401, "missing or invalid ingest key (X-Ingest-Key)", {"WWW-Authenticate": "Bearer"}
        )


IngestKeyDep = Annotated[None, Depends(require_ingest_key)]


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it passes `max_bytes` (never buffered beyond)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _record(services: Services, event: Any) -> None:
    if not services.recorder.record(event):
        raise HTTPException(503, "the usage queue is full; retry shortly", {"Retry-After": "1"})


@router.post(
    "",
    response_model=UsageLogged,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"example": EXAMPLE_RECORD}},
        }
    },
)
async def log_usage(
    request: Request, _: IngestKeyDep, services: ServicesDep
) -> UsageLogged | JSONResponse:
    """Record one call made through an external gateway (the seed's body). An LLM call may add
    `model`, `prompt_tokens`, `completion_tokens`, `cached_prompt_tokens`, `reasoning_tokens`
    and `usage_source`; its cost is computed now, from today's prices, and kept."""
    body = await _read_body(request, SINGLE_RECORD_MAX_BYTES)
    try:
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return error_response(
            422, "body is not valid JSON", fields=[{"field": "body", "message": "invalid JSON"}]
        )
    try:
        event = parse_usage_record(record, utcnow(), (await services.prices.current()).prices)
    except IngestError as exc:
        return error_response(422, f"invalid usage record: {exc}", fields=exc.fields)
    _record(services, event)
    return UsageLogged(status="logged", event_id=event.event_id)


@router.post("/batch", response_model=BatchLogged)
async def log_usage_batch(
    request: Request, _: IngestKeyDep, services: ServicesDep
) -> BatchLogged | JSONResponse:
    """Record many calls: a JSON array, or NDJSON (`Content-Type: application/x-ndjson`, one
    record per line). Good records are accepted even when others are rejected."""
    settings = services.settings
    body = await _read_body(request, settings.ingest_max_batch_bytes)
    is_ndjson = "ndjson" in request.headers.get("content-type", "")
    try:
        if is_ndjson:
            lines = [line for line in body.decode("utf-8").splitlines() if line.strip()]
            items: list[Any] = []
            for line in lines:
                try:
                    items.append(json.loads(line))
                except ValueError:
                    items.append(_UNPARSABLE)
        else:
            items = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return error_response(
            422, "body is not valid JSON", fields=[{"field": "body", "message": "invalid JSON"}]
        )
    if not isinstance(items, list):
        return error_response(
            422,
            "a batch is a JSON array (or NDJSON)",
            fields=[{"field": "body", "message": "must be a JSON array"}],
        )
    if len(items) > settings.ingest_max_batch_items:
        raise HTTPException(413, f"at most {settings.ingest_max_batch_items} records per batch")
    now = utcnow()
    prices = (await services.prices.current()).prices  # one table for the whole batch
    accepted = 0
    errors: list[RejectedRecord] = []
    for index, item in enumerate(items):
        if item is _UNPARSABLE:
            errors.append(_rejected(index, [{"field": "body", "message": "invalid JSON"}]))
            continue
        try:
            event = parse_usage_record(item, now, prices)
        except IngestError as exc:
            errors.append(_rejected(index, exc.fields))
            continue
        if services.recorder.record(event):
            accepted += 1
        else:
            errors.append(_rejected(index, [{"field": "body", "message": "queue full"}]))
    return BatchLogged(accepted=accepted, rejected=len(errors), errors=errors)


def _rejected(index: int, fields: list[dict[str, str]]) -> RejectedRecord:
    return RejectedRecord(index=index, fields=[FieldError(**field) for field in fields])


_UNPARSABLE = object()
