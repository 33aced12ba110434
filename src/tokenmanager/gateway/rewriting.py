"""Request rewriting on the hot path, as pure functions over ASGI's raw byte pairs: headers,
the upstream URL and the caller's address.

Order matters in `build_upstream_headers`: everything the client may not pass on (hop-by-hop
headers, anything it names in `Connection`, its own credential) is removed first, and only then
is the route's credential injected, so no client header can strip or shadow the injected one.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode

from tokenmanager.routes.models import UpstreamCredential
from tokenmanager.ssrf import IPNetwork, parse_ip_literal

RawHeaders = Iterable[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
    }
)  # fmt: skip
# The gateway sets these itself for the upstream connection.
_REQUEST_MANAGED = frozenset({b"host", b"content-length", b"x-api-key", b"authorization"})
# Response headers not relayed: hop-by-hop, plus framing uvicorn recomputes.
_RESPONSE_DROPPED = HOP_BY_HOP | {b"server", b"date"}
_BEARER_PREFIX = b"bearer "


class FramingError(ValueError):
    """The request's framing is ambiguous (a smuggling shape): answer 400."""


def extract_token(headers: RawHeaders) -> str | None:
    """The client's token from `X-API-Key`, or `Authorization: Bearer …` (the OpenAI SDK)."""
    bearer: str | None = None
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization" and value[:7].lower() == _BEARER_PREFIX:
            bearer = value[7:].decode("latin-1").strip()
    return bearer


def check_framing(headers: RawHeaders, max_header_bytes: int) -> int | None:
    """The declared Content-Length (None if chunked or absent).

    FramingError for both Content-Length and Transfer-Encoding, differing or malformed
    Content-Lengths; OverflowError when the headers exceed `max_header_bytes`.
    """
    total = 0
    lengths: set[bytes] = set()
    has_transfer_encoding = False
    for name, value in headers:
        total += len(name) + len(value) + 4
        if name == b"content-length":
            lengths.update(part.strip() for part in value.split(b","))
        elif name == b"transfer-encoding":
            has_transfer_encoding = True
    if total > max_header_bytes:
        raise OverflowError(total)
    if has_transfer_encoding and lengths:
        raise FramingError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise FramingError("conflicting Content-Length values")
    if lengths:
        (length,) = lengths
        if not length.isdigit():
            raise FramingError("malformed Content-Length")
        return int(length)
    return None


def build_upstream_headers(
    headers: RawHeaders, credential: UpstreamCredential | None
) -> list[tuple[str, str]]:
    """Client headers minus what must not travel, plus the route's credential header."""
    headers = list(headers)
    named_in_connection: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named_in_connection.update(t.strip().lower() for t in value.split(b",") if t.strip())
    removed = HOP_BY_HOP | _REQUEST_MANAGED | named_in_connection
    injected = (
        credential.header.lower().encode("latin-1") if credential and credential.header else None
    )
    upstream = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name not in removed and name != injected
    ]
    if credential is not None and credential.header is not None:
        upstream.append((credential.header, credential.value))
    return upstream


def build_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers to relay (lower-case names), without hop-by-hop ones."""
    relayed = []
    named_in_connection: set[bytes] = set()
    pairs = [(name.lower(), value) for name, value in headers]
    for name, value in pairs:
        if name == b"connection":
            named_in_connection.update(t.strip().lower() for t in value.split(b","))
    for name, value in pairs:
        if name not in _RESPONSE_DROPPED and name not in named_in_connection:
            relayed.append((name, value))
    return relayed


def header_value(headers: RawHeaders, wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


class UnsafePathError(ValueError):
    """The path has `.` or `..` segments that would climb out of the route's upstream path."""


def build_upstream_url(
    upstream_url: str,
    path_prefix: str,
    path: str,
    raw_path: bytes | None,
    query_string: bytes,
    credential: UpstreamCredential | None,
) -> str:
    """`upstream_url` + what follows the prefix + the query (credential parameter injected).

    GET /api/echo/a/b?x=1 on a route /api/echo -> upstream_url + /a/b?x=1; a query in the
    upstream URL itself comes first (https://host/v1?api-version=2 -> …/v1/a/b?api-version=2&x=1).
    """
    remainder = path[len(path_prefix) :] if path_prefix != "/" else path
    if "." in remainder and any(segment in (".", "..") for segment in remainder.split("/")):
        raise UnsafePathError(path)
    prefix_bytes = path_prefix.encode("ascii") if path_prefix != "/" else b""
    if raw_path is not None and raw_path.startswith(prefix_bytes):
        encoded_remainder = raw_path[len(prefix_bytes) :].decode("ascii", "replace")
    else:
        encoded_remainder = quote(remainder, safe="/:@!$&'()*+,;=-._~")
    upstream_base, _, fixed_query = upstream_url.partition("?")
    query = "&".join(part for part in (fixed_query, query_string.decode("latin-1")) if part)
    if credential is not None and credential.query_param is not None:
        kept = [
            pair
            for pair in parse_qsl(query, keep_blank_values=True)
            if pair[0] != credential.query_param
        ]
        kept.append((credential.query_param, credential.value))
        query = urlencode(kept)
    url = upstream_base + encoded_remainder
    return f"{url}?{query}" if query else url


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the right-most
    address in X-Forwarded-For that is not itself a trusted proxy."""
    if peer is None or not forwarded_for or not trusted or not _is_in(peer, trusted):
        return peer
    for candidate in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not candidate:
            continue
        if not _is_in(candidate, trusted):
            return candidate if parse_ip_literal(candidate) else peer
    return peer


def _is_in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    parsed = parse_ip_literal(address)
    return parsed is not None and any(parsed in network for network in networks)
