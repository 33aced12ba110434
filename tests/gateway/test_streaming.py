"""Streaming through the gateway over real loopback HTTP: SSE arrives event by event, large
responses arrive byte-exact, request bodies stream upstream, and the official `openai` client
works against the gateway as if it were the API."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from openai import AsyncOpenAI

from tokenmanager.mock_upstream.app import CHUNK_BYTES, pattern_bytes
from tokenmanager.routes.models import Route
from tokenmanager.tokens.models import IssuedToken

from .stage import MOCK_PREFIX, OPENAI_SCOPE, AddRoute, UsageRows

OPENAI_PREFIX = "/api/openai"
LARGE_RESPONSE_BYTES = 64 * 1024 * 1024
LARGE_UPLOAD_BYTES = 8 * 1024 * 1024


async def test_sse_events_arrive_as_the_upstream_sends_them(
    client: httpx.AsyncClient, token: IssuedToken, mock_route: Route, usage_rows: UsageRows
) -> None:
    arrivals: list[tuple[float, int]] = []
    buffer = b""
    started = time.monotonic()

    async with client.stream(
        "GET",
        f"{MOCK_PREFIX}/stream/5?interval_ms=300",
        headers={"X-API-Key": token.token_secret},
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        async for chunk in answer.aiter_raw():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                index = json.loads(event.removeprefix(b"data: "))["index"]
                arrivals.append((time.monotonic() - started, index))

    assert [index for _, index in arrivals] == [0, 1, 2, 3, 4]
    first_s, last_s = arrivals[0][0], arrivals[-1][0]
    # The upstream sends the last event 1.2 s after the first: a buffering gateway would
    # deliver them all together at the end.
    assert last_s >= 1.0
    assert first_s < last_s / 4
    (row,) = await usage_rows(1)
    assert (row.response_status, row.route_path, row.failure_kind) == (200, MOCK_PREFIX, None)
    assert row.ttfb_ms is not None
    assert row.ttfb_ms < last_s * 1000 / 4


async def test_large_response_arrives_byte_exact(
    client: httpx.AsyncClient, token: IssuedToken, mock_route: Route, usage_rows: UsageRows
) -> None:
    expected = hashlib.sha256()
    pattern = pattern_bytes(CHUNK_BYTES)
    for _ in range(LARGE_RESPONSE_BYTES // CHUNK_BYTES):
        expected.update(pattern)
    received = hashlib.sha256()
    received_bytes = 0

    async with client.stream(
        "GET",
        f"{MOCK_PREFIX}/bytes/{LARGE_RESPONSE_BYTES}",
        headers={"X-API-Key": token.token_secret},
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(LARGE_RESPONSE_BYTES)
        async for chunk in answer.aiter_raw():
            received.update(chunk)
            received_bytes += len(chunk)

    assert received_bytes == LARGE_RESPONSE_BYTES
    assert received.hexdigest() == expected.hexdigest()
    (row,) = await usage_rows(1)
    assert (row.response_status, row.bytes_out) == (200, LARGE_RESPONSE_BYTES)


async def _upload_chunks(total: int) -> AsyncIterator[bytes]:
    chunk = b"u" * CHUNK_BYTES
    for _ in range(total // CHUNK_BYTES):
        yield chunk


async def test_large_request_body_streams_to_the_upstream(
    client: httpx.AsyncClient, token: IssuedToken, mock_route: Route, usage_rows: UsageRows
) -> None:
    answer = await client.post(
        f"{MOCK_PREFIX}/echo",
        headers={"X-API-Key": token.token_secret},
        content=_upload_chunks(LARGE_UPLOAD_BYTES),
    )

    assert answer.status_code == 200
    assert len(answer.json()["body"]) == LARGE_UPLOAD_BYTES
    (row,) = await usage_rows(1)
    assert (row.response_status, row.bytes_in) == (200, LARGE_UPLOAD_BYTES)


# -- the official openai client --------------------------------------------------------------


@pytest.fixture
async def openai_client(
    gateway: str, token: IssuedToken, add_route: AddRoute, mock_upstream: str
) -> AsyncIterator[AsyncOpenAI]:
    await add_route(
        path_prefix=OPENAI_PREFIX,
        upstream_url=f"{mock_upstream}/v1",
        required_scopes=[OPENAI_SCOPE],
    )
    async with AsyncOpenAI(
        api_key=token.token_secret, base_url=f"{gateway}{OPENAI_PREFIX}", max_retries=0
    ) as openai_client:
        yield openai_client


async def test_openai_client_completes_a_chat_through_the_gateway(
    openai_client: AsyncOpenAI, usage_rows: UsageRows
) -> None:
    completion = await openai_client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hello there"}]
    )

    assert completion.choices[0].message.content == "mock reply to: hello there"
    (row,) = await usage_rows(1)
    assert (row.response_status, row.route_path, row.request_method) == (
        200,
        OPENAI_PREFIX,
        "POST",
    )
    assert row.bytes_out > 0
    assert row.ttfb_ms is not None


async def test_openai_client_streams_a_chat_through_the_gateway(
    openai_client: AsyncOpenAI, usage_rows: UsageRows
) -> None:
    stream = await openai_client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "stream it"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]

    assert "".join(pieces) == "mock reply to: stream it"
    assert len(pieces) > 1
    (row,) = await usage_rows(1)
    assert (row.response_status, row.route_path) == (200, OPENAI_PREFIX)
    assert row.bytes_out > 0
    assert row.ttfb_ms is not None


async def test_openai_client_lists_models_through_the_gateway(
    openai_client: AsyncOpenAI, usage_rows: UsageRows
) -> None:
    models = [model.id async for model in openai_client.models.list()]

    assert models == ["mock-model"]
    (row,) = await usage_rows(1)
    assert (row.response_status, row.route_path, row.request_method) == (200, OPENAI_PREFIX, "GET")
    assert row.bytes_out > 0
    assert row.ttfb_ms is not None
