"""Liveness and readiness: the only endpoints that need no sign-in."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tokenmanager.api.auth import ServicesDep
from tokenmanager.errors import SchemaNotReadyError
from tokenmanager.storage.migrate import ensure_at_head

router = APIRouter(tags=["health"])


class Alive(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    reason: str | None = None


@router.get("/healthz", response_model=Alive)
async def healthz() -> Alive:
    """The process is alive."""
    return Alive(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={503: {"model": Readiness, "description": "Not ready: see `reason`"}},
)
async def readyz(services: ServicesDep) -> Readiness | JSONResponse:
    """The database answers and its schema is at the version this code needs."""
    try:
        await ensure_at_head(services.database.engine)
    except SchemaNotReadyError as exc:
        return JSONResponse({"status": "not_ready", "reason": exc.message}, status_code=503)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
        reason = f"database unreachable ({type(exc).__name__})"
        return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
    return Readiness(status="ready")
