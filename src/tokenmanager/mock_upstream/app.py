"""The mock upstream's aiohttp application.

POST /v1/chat/completions   OpenAI chat completion, JSON or ("stream": true) SSE
POST /v1/completions        OpenAI legacy completion, JSON or SSE
POST /v1/embeddings         OpenAI embeddings ("dimensions" floats per input, default 8)
POST /v1/responses          OpenAI Responses API, JSON or SSE (usage in response.completed)
POST /v1/messages           Anthropic Messages, JSON or SSE (message_start ... message_stop)
GET  /v1/models             a model list
ANY  /echo/{path}           {"method", "path", "query", "headers", "body"}
ANY  /status/{code}         that status, JSON body
ANY  /delay/{ms}            answers after ms milliseconds
GET  /stream/{n}            n SSE events, flushed one by one (?interval_ms=)
GET  /bytes/{n}             n bytes (deterministic pattern), streamed in 64 KiB chunks
GET  /hang                  never answers (timeouts)
GET  /stall                 sends headers and one chunk, then nothing
GET  /reset                 sends part of a body, then resets the connection
GET  /stats                 {"open_streams"}: /stream responses still being sent (for tests)

The LLM endpoints report deterministic usage (the counting rule is in `llm.py`) and honour
body fields for tests: mock_chunks, mock_interval_ms (a long, slow stream), mock_reset_after
(reset mid-stream), mock_ignore_include_usage (a provider that ignores stream_options),
mock_cached_tokens, mock_cache_creation_tokens, mock_reasoning_tokens, mock_reply. With
`stream_options.include_usage` true, OpenAI streams carry `"usage":null` on every chunk and a
final usage-only chunk (`"choices":[]`), in compact JSON, as OpenAI sends them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiohttp import web

from tokenmanager.mock_upstream.anthropic import messages
from tokenmanager.mock_upstream.openai import chat_completions, completions, embeddings, responses

MAX_BYTES = 4 * 1024**3
CHUNK_BYTES = 64 * 1024
_PATTERN = bytes(range(256)) * (CHUNK_BYTES // 256)


@dataclass(slots=True)
class MockStats:
    """In-memory counters that let tests observe the upstream side of a connection."""

    open_streams: int = 0


STATS = web.AppKey("stats", MockStats)


def pattern_bytes(n: int) -> bytes:
    """What /bytes/{n} sends, for byte-exact comparisons in tests."""
    full, rest = divmod(n, CHUNK_BYTES)
    return _PATTERN * full + _PATTERN[:rest]


async def models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}]}
    )


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": "/" + request.match_info.get("path", ""),
            "query": request.query_string,
            "headers": {name: value for name, value in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )


def _int(request: web.Request, name: str, maximum: int) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not 0 <= value <= maximum:
        raise web.HTTPBadRequest(text=f"{name} must be between 0 and {maximum}")
    return value


async def status(request: web.Request) -> web.Response:
    code = _int(request, "code", 599)
    if code < 200:
        raise web.HTTPBadRequest(text="status must be 200-599")
    return web.json_response({"status": code}, status=code)


async def delay(request: web.Request) -> web.Response:
    delay_ms = _int(request, "ms", 600_000)
    await asyncio.sleep(delay_ms / 1000)
    return web.json_response({"delayed_ms": delay_ms})


async def stream(request: web.Request) -> web.StreamResponse:
    count = _int(request, "n", 100_000)
    interval_s = int(request.query.get("interval_ms", "0")) / 1000
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    stats = request.app[STATS]
    stats.open_streams += 1
    try:
        await response.prepare(request)
        for index in range(count):
            # Raises once the downstream side has gone, which ends the stream here.
            await response.write(f"data: {json.dumps({'index': index})}\n\n".encode())
            if interval_s:
                await asyncio.sleep(interval_s)
        await response.write_eof()
    finally:
        stats.open_streams -= 1
    return response


async def read_stats(request: web.Request) -> web.Response:
    return web.json_response({"open_streams": request.app[STATS].open_streams})


async def send_bytes(request: web.Request) -> web.StreamResponse:
    size = _int(request, "n", MAX_BYTES)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    full, rest = divmod(size, CHUNK_BYTES)
    for _ in range(full):
        await response.write(_PATTERN)
    if rest:
        await response.write(_PATTERN[:rest])
    await response.write_eof()
    return response


async def hang(request: web.Request) -> web.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(b"first chunk\n")
    await asyncio.Event().wait()
    return response


async def reset(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = 1_000_000
    await response.prepare(request)
    await response.write(b"x" * 1000)
    transport = request.transport
    assert transport is not None
    transport.abort()  # RST mid-body
    return response


def build_mock_upstream() -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)
    app[STATS] = MockStats()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{path:.*}", echo)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/delay/{ms}", delay)
    app.router.add_get("/stream/{n}", stream)
    app.router.add_get("/bytes/{n}", send_bytes)
    app.router.add_get("/hang", hang)
    app.router.add_get("/stall", stall)
    app.router.add_get("/reset", reset)
    app.router.add_get("/stats", read_stats)
    return app
