"""Upstream failures through the gateway over real loopback HTTP: each one is answered within the
route's time budget (or breaks the response off) and recorded with its own failure kind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tokenmanager.routes.models import Route
from tokenmanager.testing import free_port
from tokenmanager.tokens.models import IssuedToken

from .stage import MOCK_PREFIX, AddRoute, UsageRows

BUDGET_SLACK_S = 1.0  # scheduling slack on top of a route's timeout
UPSTREAM_CLOSE_DEADLINE_S = 1.0


async def read_body(answer: httpx.Response, received: list[bytes]) -> None:
    """Read a streamed body into `received`, so a test sees what came before a failure."""
    async for chunk in answer.aiter_raw():
        received.append(chunk)


async def test_closed_upstream_port_gets_502_connect_error(
    client: httpx.AsyncClient, token: IssuedToken, add_route: AddRoute, usage_rows: UsageRows
) -> None:
    await add_route(path_prefix="/api/closed", upstream_url=f"http://127.0.0.1:{free_port()}")

    answer = await client.get("/api/closed", headers={"X-API-Key": token.token_secret})

    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "bad_gateway"
    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind, row.route_path) == (
        502,
        "connect_error",
        "/api/closed",
    )


async def test_hanging_upstream_gets_504_within_the_total_timeout(
    client: httpx.AsyncClient,
    token: IssuedToken,
    add_route: AddRoute,
    mock_upstream: str,
    usage_rows: UsageRows,
) -> None:
    await add_route(
        path_prefix="/api/hang",
        upstream_url=f"{mock_upstream}/hang",
        connect_timeout_s=0.5,
        total_timeout_s=0.5,
    )

    started = time.monotonic()
    answer = await client.get("/api/hang", headers={"X-API-Key": token.token_secret})
    elapsed_s = time.monotonic() - started

    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "gateway_timeout"
    assert 0.5 <= elapsed_s < 0.5 + BUDGET_SLACK_S
    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind) == (504, "timeout")


async def test_upstream_stalling_after_headers_breaks_the_body_and_records_read_timeout(
    client: httpx.AsyncClient,
    token: IssuedToken,
    add_route: AddRoute,
    mock_upstream: str,
    usage_rows: UsageRows,
) -> None:
    await add_route(
        path_prefix="/api/stall", upstream_url=f"{mock_upstream}/stall", read_timeout_s=0.5
    )
    received: list[bytes] = []

    started = time.monotonic()
    async with client.stream(
        "GET", "/api/stall", headers={"X-API-Key": token.token_secret}
    ) as answer:
        assert answer.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await read_body(answer, received)
    elapsed_s = time.monotonic() - started

    assert b"".join(received) == b"first chunk\n"
    assert elapsed_s < 0.5 + BUDGET_SLACK_S
    (row,) = await usage_rows(1)
    assert (row.failure_kind, row.bytes_out) == ("read_timeout", len(b"first chunk\n"))
    assert row.response_status == 504


async def test_upstream_reset_mid_body_breaks_the_body_and_records_upstream_reset(
    client: httpx.AsyncClient, token: IssuedToken, mock_route: Route, usage_rows: UsageRows
) -> None:
    received: list[bytes] = []

    async with client.stream(
        "GET", f"{MOCK_PREFIX}/reset", headers={"X-API-Key": token.token_secret}
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == "1000000"
        with pytest.raises(httpx.RemoteProtocolError):
            await read_body(answer, received)

    received_bytes = sum(map(len, received))
    assert received_bytes < 1_000_000
    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind) == (502, "upstream_reset")
    assert row.bytes_out == received_bytes


async def _open_streams(mock_upstream: str) -> int:
    async with httpx.AsyncClient() as probe:
        count: int = (await probe.get(f"{mock_upstream}/stats")).json()["open_streams"]
        return count


async def test_client_disconnect_mid_stream_closes_the_upstream_and_records_499(
    client: httpx.AsyncClient,
    token: IssuedToken,
    mock_route: Route,
    mock_upstream: str,
    usage_rows: UsageRows,
) -> None:
    async with client.stream(
        "GET",
        f"{MOCK_PREFIX}/stream/100?interval_ms=100",
        headers={"X-API-Key": token.token_secret},
    ) as answer:
        first_chunk = await anext(answer.aiter_raw())
        assert await _open_streams(mock_upstream) == 1
    disconnected = time.monotonic()  # leaving the block closes the connection mid-body

    while await _open_streams(mock_upstream) != 0:
        assert time.monotonic() - disconnected < UPSTREAM_CLOSE_DEADLINE_S
        await asyncio.sleep(0.02)
    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind, row.route_path) == (
        499,
        "client_disconnect",
        MOCK_PREFIX,
    )
    # The gateway counts whole events it relayed: at least what the client read, at most a few.
    event_sizes = [len(f"data: {json.dumps({'index': i})}\n\n") for i in range(100)]
    relayed_totals = {sum(event_sizes[:n]) for n in range(1, 100)}
    assert row.bytes_out >= len(first_chunk) > 0
    assert row.bytes_out in relayed_totals
    assert row.bytes_out < sum(event_sizes[:20])


class ScriptedUpstream:
    """A loopback HTTP/1.1 upstream (keep-alive) that answers GET with 200 and treats other
    methods by `on_other`: "close" drops the connection unanswered, "hold" never answers.
    Records each request line and when the gateway closed a held connection."""

    def __init__(self, on_other: str) -> None:
        self.on_other = on_other
        self.request_lines: list[bytes] = []
        self.request_seen = asyncio.Event()
        self.closed_by_peer = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.request_lines.append(head.split(b"\r\n", 1)[0])
                self.request_seen.set()
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                if head.startswith(b"GET "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                elif self.on_other == "hold":
                    if await reader.read() == b"":
                        self.closed_by_peer.set()
                    return
                else:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def scripted_upstream(request: pytest.FixtureRequest) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(request.param)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


@pytest.mark.parametrize("scripted_upstream", ["close"], indirect=True)
async def test_post_is_not_retried_when_a_pooled_upstream_connection_drops(
    client: httpx.AsyncClient,
    token: IssuedToken,
    add_route: AddRoute,
    scripted_upstream: ScriptedUpstream,
    usage_rows: UsageRows,
) -> None:
    await add_route(
        path_prefix="/api/scripted", upstream_url=f"http://127.0.0.1:{scripted_upstream.port}"
    )
    headers = {"X-API-Key": token.token_secret}
    assert (await client.get("/api/scripted", headers=headers)).status_code == 200  # pooled now

    answer = await client.post("/api/scripted", headers=headers, content=b"charge the card")

    assert answer.status_code == 502
    assert scripted_upstream.request_lines == [
        b"GET / HTTP/1.1",
        b"POST / HTTP/1.1",
    ]
    rows = await usage_rows(2)
    assert len(rows) == 2
    assert (rows[1].response_status, rows[1].failure_kind) == (502, "upstream_disconnected")


@pytest.mark.parametrize("scripted_upstream", ["hold"], indirect=True)
async def test_client_disconnect_before_the_response_closes_the_upstream_and_records_499(
    client: httpx.AsyncClient,
    token: IssuedToken,
    add_route: AddRoute,
    scripted_upstream: ScriptedUpstream,
    usage_rows: UsageRows,
) -> None:
    await add_route(
        path_prefix="/api/scripted", upstream_url=f"http://127.0.0.1:{scripted_upstream.port}"
    )
    call = asyncio.create_task(
        client.post("/api/scripted", headers={"X-API-Key": token.token_secret}, content=b"x")
    )
    await asyncio.wait_for(scripted_upstream.request_seen.wait(), UPSTREAM_CLOSE_DEADLINE_S)

    call.cancel()  # the client gives up and closes its connection
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await asyncio.wait_for(scripted_upstream.closed_by_peer.wait(), UPSTREAM_CLOSE_DEADLINE_S)

    (row,) = await usage_rows(1)
    assert (row.response_status, row.failure_kind, row.bytes_out) == (499, "client_disconnect", 0)
