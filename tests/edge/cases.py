"""The parity table: one request per case, sent unchanged to the Python gateway and to the
edge Worker, with what both must answer. Shared by test_parity.py and the benchmark's warm-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    path: str
    token: str | None  # a key of the stage's secrets, or None for no credential
    expected_status: int
    via: str = "x-api-key"  # or "bearer"
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # Checks on what the upstream saw (the mock upstream's /echo answer), for 2xx echo cases.
    seen: dict[str, Any] = field(default_factory=dict)
    # A documented difference: what the Worker's upstream sees instead (docs/edge.md).
    edge_differs: dict[str, Any] = field(default_factory=dict)


CASES = (
    Case("no token", "/api/echo/a", None, 401),
    Case("malformed token (bad checksum)", "/api/echo/a", "bad_checksum", 401),
    Case("unknown token", "/api/echo/a", "unknown", 401),
    Case("revoked token", "/api/echo/a", "revoked", 401),
    Case("expired token", "/api/echo/a", "expired", 401),
    Case("missing scope", "/api/echo/a", "narrow", 403),
    Case("no route", "/nowhere/at/all", "valid", 404),
    Case("prefix at a / boundary only", "/api/echoes", "valid", 404),
    Case("scope needed by another route", "/api/admin/x", "valid", 403),
    Case(
        "X-API-Key: forwarded, header credential injected, client credential stripped",
        "/api/echo/a/b?x=1",
        "valid",
        200,
        seen={"path": "/a/b", "query": "x=1", "authorization": "injected", "x-api-key": None},
    ),
    Case(
        "Bearer: the client's Authorization is replaced by the injected one",
        "/api/echo/b",
        "valid",
        200,
        via="bearer",
        seen={"path": "/b", "authorization": "injected"},
    ),
    Case(
        "longest prefix wins; query credential injected after the fixed query, forgery dropped",
        "/api/echo/deeper/z?a=1&key=forged",
        "valid",
        200,
        seen={"path": "/deep/z", "query": "fixed=1&a=1&key=QUERY", "authorization": None},
    ),
    Case(
        "hop-by-hop headers stripped, others kept",
        "/api/echo/h",
        "valid",
        200,
        headers={"Proxy-Authorization": "Basic cHJveHk6c2VjcmV0", "Keep-Alive": "5", "X-Kept": "k"},
        seen={"proxy-authorization": None, "keep-alive": None, "x-kept": "k"},
    ),
    Case(
        "Connection-named headers: stripped by the Python gateway only",
        "/api/echo/c",
        "valid",
        200,
        headers={"Connection": "x-private", "X-Private": "p"},
        seen={"x-private": None},
        # The Workers runtime consumes `Connection` before the Worker runs (on Cloudflare and in
        # workerd alike), so the Worker cannot know which headers it named: docs/edge.md.
        edge_differs={"x-private": "p"},
    ),
    Case(
        "a request body reaches the upstream",
        "/api/echo/post",
        "valid",
        200,
        method="POST",
        headers={"Content-Type": "application/json"},
        body=b'{"hello": "edge"}',
        seen={"body": '{"hello": "edge"}', "method": "POST"},
    ),
    Case("upstream status relayed", "/api/mock/status/418", "valid", 418),
    Case("streamed response relayed whole", "/api/mock/stream/5", "valid", 200),
)
