"""Who is looking at a page, and signing in and out of the dashboard.

The dashboard shares the API's session cookie and CSRF token (tokenmanager.api.auth), so a
signed-in page may call the API too. Every state change needs the CSRF token, from the form
field `csrf_token` or the `X-CSRF-Token` header (htmx sends it); GET never changes state.
The login form has its own CSRF token, bound to a pre-session nonce cookie.
"""

from __future__ import annotations

import hmac
import math
import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.responses import RedirectResponse, Response

from tokenmanager.access.actor import Actor
from tokenmanager.api.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    ServicesDep,
    client_ip,
    csrf_token_for,
    read_session_secret,
)
from tokenmanager.composition import Services
from tokenmanager.users.service import LoginThrottledError, actor_for
from tokenmanager.web.i18n import Locale, pick_language
from tokenmanager.web.rendering import LANGUAGE_COOKIE, THEMES, PageContext, Renderer

router = APIRouter(include_in_schema=False)

THEME_COOKIE = "tm_theme"
LOGIN_NONCE_COOKIE = "tm_login"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequiredError(Exception):
    """A page was asked for without a live session: the site answers with a redirect."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


def get_renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.web_renderer
    return renderer


RendererDep = Annotated[Renderer, Depends(get_renderer)]


def _locale(request: Request) -> Locale:
    return Locale(
        pick_language(
            request.query_params.get("lang"),
            request.cookies.get(LANGUAGE_COOKIE),
            request.headers.get("accept-language", ""),
        )
    )


def _theme(request: Request) -> str:
    theme = request.cookies.get(THEME_COOKIE, "")
    return theme if theme in THEMES else "auto"


async def _signed_in(request: Request, services: Services) -> tuple[Actor, str, bool] | None:
    """(actor, session secret, whether it came from the cookie) for a live session."""
    session_secret, from_cookie = read_session_secret(request)
    if session_secret is None:
        return None
    user = await services.users.resolve_session(session_secret)
    if user is None:
        return None
    return actor_for(user, client_ip(request)), session_secret, from_cookie


def query_without_lang(request: Request) -> str:
    """The page's query string without `lang` (the language links add their own)."""
    return urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "lang"])


def twin_url(path: str, request: Request) -> str:
    """The `.json` twin of the page being rendered, with the page's filters."""
    query = query_without_lang(request)
    return f"{path}?{query}" if query else path


async def _sent_csrf_token(request: Request) -> str:
    sent = request.headers.get(CSRF_HEADER)
    if sent:
        return sent
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def page_context(request: Request, services: ServicesDep) -> PageContext:
    """The signed-in page's context; SignInRequiredError (a redirect to /login) without a session,
    403 for a state change without the right CSRF token."""
    found = await _signed_in(request, services)
    if found is None:
        if request.method in _SAFE_METHODS:
            raise SignInRequiredError(request.url.path)
        raise HTTPException(401, "sign in first")
    actor, session_secret, from_cookie = found
    csrf_token = csrf_token_for(services, session_secret)
    if from_cookie and request.method not in _SAFE_METHODS:
        sent = await _sent_csrf_token(request)
        if not hmac.compare_digest(sent, csrf_token):
            raise HTTPException(403, "missing or invalid CSRF token")
    return PageContext(
        actor=actor,
        csrf_token=csrf_token,
        locale=_locale(request),
        theme=_theme(request),
        path=request.url.path,
        query=query_without_lang(request),
    )


Page = Annotated[PageContext, Depends(page_context)]


def signed_in_actor(page: Page) -> Actor:
    assert page.actor is not None  # page_context only returns signed-in contexts
    return page.actor


def _safe_next(raw: str | None) -> str:
    """Only a local path: an absolute or scheme-relative URL would be an open redirect."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/"


def _login_token(services: Services, nonce: str) -> str:
    return services.keyring.sign("login-csrf:" + nonce)


def _render_login(
    request: Request,
    services: Services,
    renderer: Renderer,
    *,
    status_code: int = 200,
    error: str | None = None,
    username: str = "",
) -> Response:
    nonce = request.cookies.get(LOGIN_NONCE_COOKIE) or secrets.token_urlsafe(24)
    page = PageContext(
        actor=None,
        csrf_token=_login_token(services, nonce),
        locale=_locale(request),
        theme=_theme(request),
        path="/login",
        query=query_without_lang(request),
    )
    response = renderer.render(
        request,
        page,
        "login.html",
        status_code=status_code,
        error=error,
        username=username,
        next_path=_safe_next(request.query_params.get("next")),
    )
    response.set_cookie(
        LOGIN_NONCE_COOKIE,
        nonce,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


@router.get("/login")
async def login_page(request: Request, services: ServicesDep, renderer: RendererDep) -> Response:
    """The form, also when signed in: signing in again replaces the session."""
    return _render_login(request, services, renderer)


@router.post("/login")
async def login(request: Request, services: ServicesDep, renderer: RendererDep) -> Response:
    """Sign in; the same answer for an unknown user and a wrong password."""
    form = await request.form()
    nonce = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    sent = form.get(CSRF_FIELD)
    if not nonce or not isinstance(sent, str):
        raise HTTPException(403, "missing or invalid CSRF token")
    if not hmac.compare_digest(sent, _login_token(services, nonce)):
        raise HTTPException(403, "missing or invalid CSRF token")
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        username, password = "", ""
    username = username[:100]
    locale = _locale(request)
    if not username or not password or len(password) > 1024:
        return _render_login(
            request, services, renderer, status_code=401, error=locale.text("wrong_login")
        )
    try:
        session = await services.users.login(username, password, client_ip(request))
    except LoginThrottledError as exc:
        seconds = math.ceil(exc.retry_after_s)
        return _render_login(
            request,
            services,
            renderer,
            status_code=429,
            error=locale.text("throttled_login", seconds=seconds),
            username=username,
        )
    if session is None:
        return _render_login(
            request,
            services,
            renderer,
            status_code=401,
            error=locale.text("wrong_login"),
            username=username,
        )
    # Rotation: whatever session this browser had before ends now; it gets a fresh one.
    previous, from_cookie = read_session_secret(request)
    if previous is not None and from_cookie:
        await services.users.logout(previous)
    next_value = form.get("next")
    response = RedirectResponse(
        _safe_next(next_value if isinstance(next_value, str) else None), status_code=303
    )
    response.set_cookie(
        SESSION_COOKIE,
        session.session_secret,
        max_age=services.settings.session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(LOGIN_NONCE_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, page: Page, services: ServicesDep) -> Response:
    """End the session (its cookie stops working at once) and go back to the login page."""
    session_secret, _ = read_session_secret(request)
    assert session_secret is not None  # page_context resolved it
    await services.users.logout(session_secret)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
