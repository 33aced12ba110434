"""Checks on route fields that the API schema cannot express. Pure functions raising
InvalidInputError with the field named."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tokenmanager.errors import InvalidInputError
from tokenmanager.llm.models import Provider
from tokenmanager.routes.matching import parse_path_prefix
from tokenmanager.routes.models import MAX_TIMEOUT_S
from tokenmanager.tokens.scopes import parse_scopes

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
_QUERY_PARAM = re.compile(r"^[A-Za-z0-9._~-]{1,100}$")
# Headers the gateway owns: injecting one of these would break framing or routing.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "x-api-key",
    }
)


def check_path_prefix(raw: str) -> str:
    try:
        return parse_path_prefix(raw)
    except ValueError as exc:
        raise InvalidInputError("path_prefix", str(exc)) from None


def check_upstream_url(raw: str) -> str:
    """An absolute http(s) URL without credentials or fragment; trailing slash removed."""
    url = raw.strip()
    if len(url) > 2048:
        raise InvalidInputError("upstream_url", "must be at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInputError("upstream_url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError("upstream_url", "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidInputError("upstream_url", "must name a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInputError(
            "upstream_url", "must not carry credentials; use upstream_auth_header instead"
        )
    if parts.fragment or "#" in url:  # an empty fragment too: the path would land after it
        raise InvalidInputError("upstream_url", "must not have a #fragment")
    if port == 0:
        raise InvalidInputError("upstream_url", "port must be between 1 and 65535")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidInputError("upstream_url", "must not contain spaces or control characters")
    # A query (e.g. Azure's ?api-version=) is kept: the gateway appends the request's path to
    # the part before it and merges the request's query after it.
    base, _, query = url.partition("?")
    return base.rstrip("/") + (f"?{query}" if query else "")


def check_required_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    try:
        required = parse_scopes(scopes)
    except ValueError as exc:
        raise InvalidInputError("required_scopes", str(exc)) from None
    if any(scope.endswith("*") for scope in required):
        raise InvalidInputError("required_scopes", "a required scope cannot be a wildcard")
    return required


def check_credential(header: str | None, query_param: str | None, value: str | None) -> None:
    """Exactly one place to inject into when a value is set; none without a value."""
    if header is not None and query_param is not None:
        raise InvalidInputError(
            "upstream_auth_query_param", "set either upstream_auth_header or this, not both"
        )
    if header is not None:
        if not _HEADER_NAME.fullmatch(header):
            raise InvalidInputError("upstream_auth_header", "is not a valid HTTP header name")
        if header.lower() in _RESERVED_HEADERS:
            raise InvalidInputError("upstream_auth_header", f"{header} is managed by the gateway")
    if query_param is not None and not _QUERY_PARAM.fullmatch(query_param):
        raise InvalidInputError("upstream_auth_query_param", "use letters, digits and ._~-")
    if value is not None:
        if header is None and query_param is None:
            raise InvalidInputError(
                "upstream_auth_value", "needs upstream_auth_header or upstream_auth_query_param"
            )
        if not value or len(value) > 8192:
            raise InvalidInputError("upstream_auth_value", "must be 1-8192 characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            # A CR or LF here would let the credential inject headers of its own.
            raise InvalidInputError("upstream_auth_value", "must not contain control characters")
    elif header is not None or query_param is not None:
        raise InvalidInputError(
            "upstream_auth_value", "is required when a place to inject it is set"
        )


def check_timeouts(connect_s: float, read_s: float, total_s: float) -> None:
    for name, value in (
        ("connect_timeout_s", connect_s),
        ("read_timeout_s", read_s),
        ("total_timeout_s", total_s),
    ):
        if not 0 < value <= MAX_TIMEOUT_S:
            raise InvalidInputError(name, f"must be more than 0 and at most {MAX_TIMEOUT_S:g}")
    if connect_s > total_s:
        raise InvalidInputError("connect_timeout_s", "must not exceed total_timeout_s")


def check_provider(raw: str | Provider | None) -> Provider | None:
    """ "openai", "anthropic" or None (not an LLM API)."""
    if raw is None:
        return None
    try:
        return Provider(raw)
    except ValueError:
        choices = ", ".join(f'"{p.value}"' for p in Provider)
        raise InvalidInputError("provider", f"must be {choices} or null") from None
