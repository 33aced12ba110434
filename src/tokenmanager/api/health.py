"""Liveness and readiness: the only endpoints that need no sign-in."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tokenmanager.api.auth import ServicesDep
from tokenmanager.errors import SchemaNotReadyError
from tokenmanager.storage.migrate import ensure_at_head

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(services: ServicesDep) -> JSONResponse | dict[str, str]:
    """The database answers and its schema is at the version this code needs."""
    try:
        await ensure_at_head(services.database.engine)
    except SchemaNotReadyError as exc:
        return JSONResponse({"status": "not_ready", "reason": exc.message}, status_code=503)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
        reason = f"database unreachable ({type(exc).__name__})"
        return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
    return {"status": "ready"}
