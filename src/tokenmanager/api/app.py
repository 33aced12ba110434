"""`create_app(settings)`: the control plane's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from tokenmanager import __version__
from tokenmanager.api import (
    audit,
    health,
    ingest,
    ingest_keys,
    prices,
    routes,
    security,
    sessions,
    teams,
    tokens,
    usage,
    users,
)
from tokenmanager.api.errors import install_error_handlers
from tokenmanager.composition import Services, build_services
from tokenmanager.settings import Settings
from tokenmanager.web.site import install_dashboard

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def _add_security_headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The app owns `services` (built from settings when not given) and closes them on exit."""
    built = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await built.recorder.start()
        pruning = asyncio.create_task(built.upkeep.prune_periodically(), name="retention")
        security_tasks = built.security.start_tasks(built.settings)
        try:
            yield
        finally:
            for task in security_tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
            await built.recorder.stop()
            await built.close()

    app = FastAPI(
        title="Token Manager",
        version=__version__,
        description="API token gateway and usage analytics: the control plane's API.",
        lifespan=lifespan,
    )
    app.state.services = built
    install_error_handlers(app)
    app.add_middleware(BaseHTTPMiddleware, dispatch=_add_security_headers)
    for module in (
        health,
        sessions,
        teams,
        users,
        tokens,
        routes,
        prices,
        ingest_keys,
        audit,
        usage,
        ingest,
        security,
    ):
        app.include_router(module.router)
    install_dashboard(app)
    return app
