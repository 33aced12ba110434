"""Turning page data into responses: Jinja2 templates (autoescaped) and the `.json` twins, both
with the dashboard's Content-Security-Policy. Templates never see a secret they could leak:
pages hand them service records, and those carry no token hash or upstream credential."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.encoders import jsonable_encoder
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from tokenmanager.access.actor import Actor
from tokenmanager.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    TokenManagerError,
)
from tokenmanager.web.i18n import Locale

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# No inline script or style anywhere: app.js and app.css are the page's only code and styles.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
THEMES = ("light", "dark")
LANGUAGE_COOKIE = "tm_lang"


@dataclass(frozen=True, slots=True)
class PageContext:
    """What every page's layout needs: who is signed in, their CSRF token, language, theme."""

    actor: Actor | None
    csrf_token: str
    locale: Locale
    theme: str  # "light", "dark" or "auto" (follow prefers-color-scheme)
    path: str
    query: str


def build_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(("html",), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return environment


class Renderer:
    """Renders the dashboard's templates in the page's language."""

    def __init__(self) -> None:
        self._environment = build_environment()

    def render(
        self,
        request: Request,
        page: PageContext,
        template: str,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        html = self._environment.get_template(template).render(
            page=page, t=page.locale.text, fmt=page.locale, request=request, **values
        )
        response = HTMLResponse(
            html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})}
        )
        if request.query_params.get("lang") == page.locale.language:
            # A `?lang=` choice that was taken is kept, so the next pages use it too.
            response.set_cookie(
                LANGUAGE_COOKIE, page.locale.language, max_age=365 * 86400, samesite="lax"
            )
        return response

    def render_failure(
        self, request: Request, page: PageContext, error: TokenManagerError
    ) -> HTMLResponse:
        """A service's refusal as an error page (the API answers the same errors in JSON)."""
        status_code, message = 500, error.message
        if isinstance(error, NotFoundError):
            status_code, message = 404, page.locale.text("not_found")
        elif isinstance(error, PermissionDeniedError):
            status_code, message = 403, page.locale.text("forbidden")
        elif isinstance(error, InvalidInputError):
            status_code = 422
        elif isinstance(error, ConflictError):
            status_code = 409
        return self.render(request, page, "error.html", status_code=status_code, message=message)


def twin(data: dict[str, Any]) -> JSONResponse:
    """A page's `.json` twin: the very data its charts draw."""
    return JSONResponse(jsonable_encoder(data), headers=PAGE_HEADERS)
