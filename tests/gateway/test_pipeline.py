"""The gateway's pipeline over real loopback HTTP: credentials, refusals, limits and the usage
row every call leaves behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.storage.schema import tokens as tokens_table
from tokenmanager.tokens import codec
from tokenmanager.tokens.models import IssuedToken

from .stage import (
    ECHO_PREFIX,
    ECHO_SCOPE,
    TEAM_ID,
    UPSTREAM_CREDENTIAL,
    AddRoute,
    PlantedListener,
    UsageRows,
)

REVOCATION_DEADLINE_S = 1.5  # the promise is 1 s; the slack absorbs a slow CI machine
RAW_DEADLINE_S = 5.0


def expect_row(
    row: Any, *, status: int, failure_kind: str | None, route_path: str | None, token_id: int | None
) -> None:
    assert (row.response_status, row.failure_kind, row.route_path, row.token_id) == (
        status,
        failure_kind,
        route_path,
        token_id,
    )


async def issue(services: Services, admin: Actor, **fields: Any) -> IssuedToken:
    fields.setdefault("scopes", [ECHO_SCOPE])
    return await services.tokens.issue(admin, name="extra", team_id=TEAM_ID, **fields)


async def exchange_raw(base_url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as written (no client normalises them); (status, body)."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), RAW_DEADLINE_S)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def poll_until_status(
    call: Callable[[], Awaitable[httpx.Response]], status: int, deadline_s: float
) -> tuple[httpx.Response, int]:
    """Call until the answer has `status`; (that answer, number of calls made)."""
    deadline = time.monotonic() + deadline_s
    calls = 0
    while True:
        answer = await call()
        calls += 1
        if answer.status_code == status:
            return answer, calls
        assert time.monotonic() < deadline, f"still {answer.status_code} after {deadline_s} s"
        await asyncio.sleep(0.02)


# -- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
async def test_gateway_accepts_the_token_from_x_api_key_or_bearer(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows, style: str
) -> None:
    secret = token.token_secret
    headers = (
        {"X-API-Key": secret} if style == "x-api-key" else {"Authorization": f"Bearer {secret}"}
    )

    answer = await client.get(ECHO_PREFIX, headers=headers)

    assert answer.status_code == 200, answer.text
    seen = answer.json()["headers"]
    assert seen["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
    assert "X-Api-Key" not in seen
    assert "ntk_" not in answer.text
    (row,) = await usage_rows(1)
    expect_row(row, status=200, failure_kind=None, route_path=ECHO_PREFIX, token_id=token.token.id)
    assert row.token_hash == codec.hash_token(secret)


@pytest.mark.parametrize(
    "client_headers",
    [
        {"Authorization": "Bearer {secret}", "Connection": "close, Authorization"},
        {"X-API-Key": "{secret}", "Connection": "close, Authorization"},
        {"X-API-Key": "{secret}", "Authorization": "Bearer sk-client-chosen"},
        {"X-API-Key": "{secret}", "Connection": "X-API-Key, Authorization, X-Upstream-Key"},
    ],
    ids=[
        "bearer named in Connection",
        "authorization named in Connection",
        "own authorization",
        "everything named in Connection",
    ],
)
async def test_upstream_sees_only_the_injected_authorization_whatever_the_client_sends(
    client: httpx.AsyncClient,
    token: IssuedToken,
    usage_rows: UsageRows,
    client_headers: dict[str, str],
) -> None:
    headers = {k: v.format(secret=token.token_secret) for k, v in client_headers.items()}

    answer = await client.get(f"{ECHO_PREFIX}/x", headers=headers)

    assert answer.status_code == 200, answer.text
    seen = answer.json()["headers"]
    assert seen["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
    assert "X-Api-Key" not in seen
    assert "Connection" not in seen or "authorization" not in seen["Connection"].lower()
    assert "ntk_" not in answer.text
    assert len(await usage_rows(1)) == 1


@pytest.mark.parametrize(
    "client_headers",
    [
        {"Connection": "X-Upstream-Key"},
        {"Connection": "close, x-upstream-key", "X-Upstream-Key": "sk-client"},
        {"X-Upstream-Key": "sk-client"},
    ],
    ids=["named in Connection", "named and sent", "client sends its own"],
)
async def test_upstream_sees_the_injected_custom_header_whatever_the_client_sends(
    client: httpx.AsyncClient,
    token: IssuedToken,
    add_route: AddRoute,
    mock_upstream: str,
    usage_rows: UsageRows,
    client_headers: dict[str, str],
) -> None:
    await add_route(
        path_prefix="/api/keyed",
        upstream_url=f"{mock_upstream}/echo",
        upstream_auth_header="X-Upstream-Key",
        upstream_auth_value="sk-injected-key",
    )

    answer = await client.get(
        "/api/keyed", headers={"X-API-Key": token.token_secret, **client_headers}
    )

    assert answer.status_code == 200, answer.text
    seen = answer.json()["headers"]
    assert seen["X-Upstream-Key"] == "sk-injected-key"
    assert "ntk_" not in answer.text
    assert len(await usage_rows(1)) == 1


async def test_path_query_method_and_body_map_onto_the_upstream(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows
) -> None:
    headers = {"X-API-Key": token.token_secret, "User-Agent": "pipeline-test/1"}

    nested = await client.get(f"{ECHO_PREFIX}/a/b?x=1&y=two", headers=headers)
    bare = await client.get(ECHO_PREFIX, headers=headers)
    posted = await client.post(f"{ECHO_PREFIX}/items", headers=headers, content=b"payload")

    assert (nested.json()["path"], nested.json()["query"]) == ("/a/b", "x=1&y=two")
    assert (bare.json()["path"], bare.json()["query"]) == ("/", "")
    assert (posted.json()["method"], posted.json()["body"]) == ("POST", "payload")
    rows = await usage_rows(3)
    assert len(rows) == 3
    for row, method in zip(rows, ["GET", "GET", "POST"], strict=True):
        expect_row(
            row, status=200, failure_kind=None, route_path=ECHO_PREFIX, token_id=token.token.id
        )
        assert (row.request_method, row.ip_address, row.user_agent) == (
            method,
            "127.0.0.1",
            "pipeline-test/1",
        )
        assert row.bytes_out > 0
        assert row.ttfb_ms is not None
    assert rows[2].bytes_in == len(b"payload")


# -- refusals --------------------------------------------------------------------------------


async def test_revoked_token_is_refused_within_a_second_of_revocation(
    client: httpx.AsyncClient, services: Services, admin: Actor, usage_rows: UsageRows
) -> None:
    victim = await issue(services, admin)
    headers = {"X-API-Key": victim.token_secret}
    assert (await client.get(ECHO_PREFIX, headers=headers)).status_code == 200  # now cached

    await services.tokens.revoke(admin, victim.token.id)
    _, calls = await poll_until_status(
        lambda: client.get(ECHO_PREFIX, headers=headers), 401, REVOCATION_DEADLINE_S
    )

    rows = await usage_rows(1 + calls)
    assert len(rows) == 1 + calls
    expect_row(
        rows[-1], status=401, failure_kind="revoked", route_path=None, token_id=victim.token.id
    )


async def test_unknown_revoked_expired_malformed_and_missing_tokens_get_identical_401s(
    client: httpx.AsyncClient,
    services: Services,
    admin: Actor,
    token: IssuedToken,
    usage_rows: UsageRows,
) -> None:
    revoked = await issue(services, admin)
    await services.tokens.revoke(admin, revoked.token.id)
    expired = await issue(services, admin, expires_at=utcnow() + timedelta(hours=1))
    async with services.database.write() as connection:  # the service refuses a past expiry
        await connection.execute(
            sa.update(tokens_table)
            .where(tokens_table.c.id == expired.token.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    good = token.token_secret
    bad_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    cases: list[tuple[dict[str, str], str, int | None]] = [
        ({"X-API-Key": codec.build_token_secret()}, "not_found", None),
        ({"X-API-Key": revoked.token_secret}, "revoked", revoked.token.id),
        ({"Authorization": f"Bearer {expired.token_secret}"}, "expired", expired.token.id),
        ({"X-API-Key": bad_checksum}, "not_found", None),
        ({"Authorization": "Bearer sk-not-one-of-ours"}, "not_found", None),
        ({}, "not_found", None),
    ]

    answers = [await client.get(ECHO_PREFIX, headers=headers) for headers, _, _ in cases]

    assert {answer.status_code for answer in answers} == {401}
    assert len({answer.content for answer in answers}) == 1
    assert json.loads(answers[0].content)["error"]["status"] == 401
    assert all(a.headers["www-authenticate"].startswith("Bearer") for a in answers)
    rows = await usage_rows(len(cases))
    assert len(rows) == len(cases)
    for row, (_, kind, token_id) in zip(rows, cases, strict=True):
        expect_row(row, status=401, failure_kind=kind, route_path=None, token_id=token_id)
    assert rows[3].token_hash == ""  # a bad checksum is refused before any lookup


async def test_token_without_the_routes_scope_gets_403(
    client: httpx.AsyncClient, services: Services, admin: Actor, usage_rows: UsageRows
) -> None:
    outsider = await issue(services, admin, scopes=["other:read"])

    answer = await client.get(ECHO_PREFIX, headers={"X-API-Key": outsider.token_secret})

    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    (row,) = await usage_rows(1)
    expect_row(
        row,
        status=403,
        failure_kind="insufficient_scope",
        route_path=ECHO_PREFIX,
        token_id=outsider.token.id,
    )


async def test_path_without_a_route_gets_404(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows
) -> None:
    answer = await client.get("/api/echoes", headers={"X-API-Key": token.token_secret})

    assert answer.status_code == 404
    (row,) = await usage_rows(1)
    expect_row(row, status=404, failure_kind="not_found", route_path=None, token_id=token.token.id)


async def test_disabled_route_gets_404(
    client: httpx.AsyncClient,
    token: IssuedToken,
    add_route: AddRoute,
    planted_listener: PlantedListener,
    usage_rows: UsageRows,
) -> None:
    await add_route(path_prefix="/api/off", upstream_url=planted_listener.url, is_enabled=False)

    answer = await client.get("/api/off", headers={"X-API-Key": token.token_secret})

    assert answer.status_code == 404
    assert planted_listener.connections == 0
    (row,) = await usage_rows(1)
    expect_row(row, status=404, failure_kind="not_found", route_path=None, token_id=token.token.id)


async def test_rate_limit_answers_429_with_retry_after_beyond_the_per_second_budget(
    client: httpx.AsyncClient, services: Services, admin: Actor, usage_rows: UsageRows
) -> None:
    limited = await issue(services, admin, rate_limit_per_s=2)
    headers = {"X-API-Key": limited.token_secret}

    started = time.time()
    answers = [await client.get(ECHO_PREFIX, headers=headers) for _ in range(10)]
    finished = time.time()

    # The limiter counts in whole wall-clock seconds; the calls may straddle a boundary.
    windows = int(finished) - int(started) + 1
    successes = [a for a in answers if a.status_code == 200]
    refusals = [a for a in answers if a.status_code == 429]
    assert len(successes) + len(refusals) == 10
    assert 2 <= len(successes) <= 2 * windows
    assert all(a.headers["retry-after"] == "1" for a in refusals)
    assert refusals[0].json()["error"]["code"] == "too_many_requests"
    rows = await usage_rows(10)
    assert len(rows) == 10
    assert [r.response_status for r in rows] == [a.status_code for a in answers]
    for row in rows:
        if row.response_status == 429:
            expect_row(
                row,
                status=429,
                failure_kind="rate_limited",
                route_path=ECHO_PREFIX,
                token_id=limited.token.id,
            )


# -- limits ----------------------------------------------------------------------------------


async def _chunks(total: int, size: int) -> Any:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


@pytest.mark.parametrize("gateway_overrides", [{"max_body_bytes": 1024}])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_the_limit_gets_413(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows, framing: str
) -> None:
    body: Any = b"x" * 4096 if framing == "content-length" else _chunks(4096, 512)

    answer = await client.post(ECHO_PREFIX, headers={"X-API-Key": token.token_secret}, content=body)

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    (row,) = await usage_rows(1)
    expect_row(
        row,
        status=413,
        failure_kind="payload_too_large",
        route_path=None if framing == "content-length" else ECHO_PREFIX,
        token_id=None if framing == "content-length" else token.token.id,
    )


@pytest.mark.parametrize("gateway_overrides", [{"max_body_bytes": 1024}])
async def test_chunked_body_within_the_limit_is_forwarded(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows
) -> None:
    answer = await client.post(
        ECHO_PREFIX, headers={"X-API-Key": token.token_secret}, content=_chunks(1000, 300)
    )

    assert answer.status_code == 200
    assert answer.json()["body"] == "x" * 1000
    (row,) = await usage_rows(1)
    assert (row.response_status, row.bytes_in) == (200, 1000)


@pytest.mark.parametrize("gateway_overrides", [{"max_header_bytes": 4096}])
async def test_headers_over_the_limit_get_431(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows
) -> None:
    headers = {"X-API-Key": token.token_secret, "X-Padding": "p" * 5000}

    answer = await client.get(ECHO_PREFIX, headers=headers)

    assert answer.status_code == 431
    (row,) = await usage_rows(1)
    expect_row(
        row,
        status=431,
        failure_kind="request_header_fields_too_large",
        route_path=None,
        token_id=None,
    )


# -- request smuggling and path tricks -------------------------------------------------------

SMUGGLING_SHAPES = {
    "cl-te": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-cl": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate cl": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl list": b"Content-Length: 5, 6\r\n\r\nhello!",
}


@pytest.mark.parametrize("shape", list(SMUGGLING_SHAPES))
async def test_smuggling_shapes_get_400_and_never_reach_the_upstream(
    gateway: str,
    token: IssuedToken,
    add_route: AddRoute,
    planted_listener: PlantedListener,
    usage_rows: UsageRows,
    shape: str,
) -> None:
    await add_route(path_prefix="/api/planted", upstream_url=planted_listener.url)
    request = (
        b"POST /api/planted HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"X-API-Key: " + token.token_secret.encode() + b"\r\n" + SMUGGLING_SHAPES[shape]
    )

    status, body = await exchange_raw(gateway, request)

    assert status == 400
    assert planted_listener.connections == 0
    if body.startswith(b"{"):  # the gateway's own refusal, recorded
        (row,) = await usage_rows(1)
        expect_row(row, status=400, failure_kind="bad_request", route_path=None, token_id=None)
    else:  # the HTTP server refused it before the gateway saw it
        assert await usage_rows(0) == []


@pytest.mark.parametrize(
    "framing_headers",
    [
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"content-length", b"5"), (b"content-length", b"6")],
    ],
    ids=["cl-te", "duplicate cl"],
)
async def test_gateway_itself_refuses_smuggling_shapes_a_lenient_server_passes_on(
    gateway: str,
    gateway_app: GatewayApp,
    token: IssuedToken,
    usage_rows: UsageRows,
    framing_headers: list[tuple[bytes, bytes]],
) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": ECHO_PREFIX,
        "raw_path": ECHO_PREFIX.encode(),
        "query_string": b"",
        "headers": [(b"x-api-key", token.token_secret.encode()), *framing_headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8787),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"hello", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gateway_app(scope, receive, send)

    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "bad_request"
    (row,) = await usage_rows(1)
    expect_row(row, status=400, failure_kind="bad_request", route_path=None, token_id=None)


@pytest.mark.parametrize(
    "path", [b"/api/planted/../admin", b"/api/planted/%2e%2e/admin", b"/api/planted/./x"]
)
async def test_dot_segments_in_the_path_get_400_before_the_upstream(
    gateway: str,
    token: IssuedToken,
    add_route: AddRoute,
    planted_listener: PlantedListener,
    usage_rows: UsageRows,
    path: bytes,
) -> None:
    route = await add_route(path_prefix="/api/planted", upstream_url=planted_listener.url)
    request = (
        b"GET " + path + b" HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"X-API-Key: " + token.token_secret.encode() + b"\r\n\r\n"
    )

    status, body = await exchange_raw(gateway, request)

    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert planted_listener.connections == 0
    (row,) = await usage_rows(1)
    expect_row(
        row,
        status=400,
        failure_kind="bad_request",
        route_path=route.path_prefix,
        token_id=token.token.id,
    )


# -- the gateway's own endpoints -------------------------------------------------------------


async def test_healthz_answers_ok_and_metrics_count_requests_by_route_and_status(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows
) -> None:
    await client.get(ECHO_PREFIX, headers={"X-API-Key": token.token_secret})
    await client.get(ECHO_PREFIX)

    health = await client.get("/healthz")
    metrics = await client.get("/metrics")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'tokenmanager_gateway_requests_total{route="/api/echo",status="200"} 1.0' in text
    assert 'tokenmanager_gateway_requests_total{route="unmatched",status="401"} 1.0' in text
    assert "tokenmanager_gateway_request_duration_seconds_bucket" in text
    assert "tokenmanager_usage_queue_depth" in text
    assert len(await usage_rows(2)) == 2  # the gateway's own endpoints are not usage
