"""Sign in and out: `POST /api/auth/login`, `POST /api/auth/logout`, `GET /api/auth/me`."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tokenmanager.api.auth import (
    SESSION_COOKIE,
    ActorDep,
    ServicesDep,
    client_ip,
    csrf_token_for,
    read_session_secret,
)
from tokenmanager.api.errors import error_response, error_responses
from tokenmanager.api.schemas import StrictBody
from tokenmanager.users.service import LoginThrottledError

# 400: a body that is not JSON; 401: wrong password or no session; 403: no CSRF token;
# 429: login throttled.
router = APIRouter(
    prefix="/api/auth", tags=["auth"], responses=error_responses(400, 401, 403, 422, 429, 503)
)


class LoginBody(StrictBody):
    username: Annotated[str, Field(min_length=1, max_length=100)]
    password: Annotated[str, Field(min_length=1, max_length=1024, repr=False)]


class LoginAnswer(BaseModel):
    access_token: str = Field(repr=False)
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    csrf_token: str


class Me(BaseModel):
    id: int | None
    username: str
    role: str
    team_ids: list[str]


@router.post("/login", response_model=LoginAnswer)
async def login(
    body: LoginBody, request: Request, response: Response, services: ServicesDep
) -> LoginAnswer | JSONResponse:
    """Exchange a username and password for a session (also set as an HttpOnly cookie)."""
    try:
        session = await services.users.login(body.username, body.password, client_ip(request))
    except LoginThrottledError as exc:
        retry_after = str(math.ceil(exc.retry_after_s))
        return error_response(
            429, "too many failed logins; try again later", headers={"Retry-After": retry_after}
        )
    if session is None:
        return error_response(401, "wrong username or password")
    ttl_s = services.settings.session_ttl_s
    response.set_cookie(
        SESSION_COOKIE,
        session.session_secret,
        max_age=ttl_s,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return LoginAnswer(
        access_token=session.session_secret,
        expires_in=ttl_s,
        csrf_token=csrf_token_for(services, session.session_secret),
    )


@router.post("/logout", status_code=204)
async def logout(request: Request, actor: ActorDep, services: ServicesDep) -> Response:
    """End the current session; its secret stops working at once."""
    session_secret, _ = read_session_secret(request)
    assert session_secret is not None  # current_actor already resolved it
    await services.users.logout(session_secret)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=Me)
async def me(actor: ActorDep) -> Me:
    return Me(
        id=actor.user_id,
        username=actor.name,
        role=actor.role.value,
        team_ids=sorted(actor.team_ids),
    )
