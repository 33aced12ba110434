"""One JSON error shape for every failure the API reports:

    {"error": {"status": 422, "code": "invalid_input", "message": "...",
               "fields": [{"field": "name", "message": "..."}]}}

`fields` appears only for validation errors. No stack trace or secret ever reaches a body.
`error_responses(...)` documents that shape in the OpenAPI document for the statuses a router
can answer with, so each router lists its failures once.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tokenmanager.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SchemaNotReadyError,
    TokenManagerError,
)

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

_STATUS_BY_ERROR: dict[type[TokenManagerError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
    PermissionDeniedError: 403,
    SchemaNotReadyError: 503,
}


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Not signed in, or the credential is wrong",
    403: "Signed in, but not allowed (role, or a missing CSRF token)",
    404: "No such object, or not one the caller may see",
    409: "Conflicts with an existing object",
    413: "Body too large",
    422: "Invalid input: `fields` names each bad field",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "Not ready (database unreachable or not migrated) or overloaded",
}
# What any signed-in operation can answer: a body that is not JSON (400), no or a bad session
# (401), a role or CSRF refusal (403), an object not found (404), a clash (409), bad input (422),
# a database not migrated (503).
SIGNED_IN_ERRORS = (400, 401, 403, 404, 409, 422, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry documenting `statuses` with the one error shape."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


def error_response(
    status: int,
    message: str,
    *,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "status": status,
        "code": _CODES.get(status, "error"),
        "message": message,
    }
    if fields is not None:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field_name(location: tuple[Any, ...]) -> str:
    # ("body", "scopes", 0) -> "scopes.0"; ("query", "limit") -> "limit"
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for error in exc.errors():
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        fields.append({"field": _field_name(tuple(error["loc"])), "message": message})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error_response(422, f"invalid input: {summary}", fields=fields)


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TokenManagerError)
    status = next((code for cls, code in _STATUS_BY_ERROR.items() if isinstance(exc, cls)), 500)
    if isinstance(exc, InvalidInputError):
        return error_response(
            status, exc.message, fields=[{"field": exc.field, "message": exc.reason}]
        )
    if status == 500:
        logger.error("unexpected error: %s", exc.message)
        return error_response(500, "internal error")
    return error_response(status, exc.message)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return error_response(exc.status_code, message, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's own 405 names only the first
    route that matched the path, so a path with GET and POST in two handlers said `Allow: POST`.
    Asked method by method, since included routers nest their routes."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The type only: an exception's text may quote a value that is a secret.
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(TokenManagerError, _on_domain_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
