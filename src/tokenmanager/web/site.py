"""`install_dashboard(app)`: mounts the dashboard's pages, their `.json` twins and the static
files on the control plane's app."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from tokenmanager.web import pages, prices, routes, security, session, tokens
from tokenmanager.web.rendering import STATIC_DIR, Renderer
from tokenmanager.web.session import SignInRequiredError


async def _redirect_to_login(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequiredError)
    return RedirectResponse("/login?" + urlencode({"next": exc.next_path}), status_code=303)


def install_dashboard(app: FastAPI) -> None:
    app.state.web_renderer = Renderer()
    app.add_exception_handler(SignInRequiredError, _redirect_to_login)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (session, pages, tokens, routes, security, prices):
        app.include_router(module.router)
