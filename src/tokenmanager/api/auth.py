"""Who is calling the API: a session secret from `Authorization: Bearer` (scripts) or the
session cookie (browsers). Cookie-authenticated state changes must carry the CSRF token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.users.service import actor_for, hash_session_secret

SESSION_COOKIE = "tm_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def csrf_token_for(services: Services, session_secret: str) -> str:
    return services.keyring.sign("csrf:" + hash_session_secret(session_secret))


def read_session_secret(request: Request) -> tuple[str | None, bool]:
    """(session secret, whether it came from the cookie)."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


async def current_actor(request: Request, services: ServicesDep) -> Actor:
    session_secret, from_cookie = read_session_secret(request)
    unauthorized = HTTPException(
        401, "sign in first: missing or invalid credentials", {"WWW-Authenticate": "Bearer"}
    )
    if session_secret is None:
        raise unauthorized
    user = await services.users.resolve_session(session_secret)
    if user is None:
        raise unauthorized
    if from_cookie and request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        expected_message = "csrf:" + hash_session_secret(session_secret)
        if not services.keyring.verify_signature(expected_message, sent):
            raise HTTPException(403, "missing or invalid CSRF token")
    return actor_for(user, client_ip(request))


ActorDep = Annotated[Actor, Depends(current_actor)]
