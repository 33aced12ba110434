"""The mock's Anthropic Messages endpoint, JSON and stream, with deterministic usage (rule in
`llm.py`). Like Anthropic, `input_tokens` excludes the prompt tokens read from or written to the
cache (`mock_cached_tokens`, `mock_cache_creation_tokens`), which are reported beside it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokenmanager.mock_upstream.llm import (
    MESSAGE_TOKENS,
    MockOptions,
    MockStream,
    json_response,
    pieces,
    read_json_body,
    text_of,
    words,
)


def _error(status: int, kind: str, message: str) -> web.Response:
    return json_response(
        {"type": "error", "error": {"type": kind, "message": message}}, status=status
    )


async def messages(request: web.Request) -> web.StreamResponse:
    try:
        body = await read_json_body(request)
    except web.HTTPBadRequest:
        return _error(400, "invalid_request_error", "invalid JSON")
    if not isinstance(body.get("max_tokens"), int):
        return _error(400, "invalid_request_error", "max_tokens: Field required")
    options = MockOptions.parse(body)
    turns = [m for m in body.get("messages") or () if isinstance(m, dict)]
    prompt = sum(words(text_of(m.get("content"))) + MESSAGE_TOKENS for m in turns)
    if "system" in body:
        prompt += words(text_of(body["system"])) + MESSAGE_TOKENS
    cache_read = min(options.cached_tokens or 0, prompt)
    cache_creation = min(options.cache_creation_tokens or 0, prompt - cache_read)
    reply = options.reply_to(text_of(turns[-1].get("content")) if turns else "")
    output_tokens = words(reply)
    usage = {
        "input_tokens": prompt - cache_read - cache_creation,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
    }
    model = str(body.get("model", "mock-model"))
    message: dict[str, Any] = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return json_response(message)

    async def events(stream: MockStream) -> None:
        # message_start carries the input counts and a placeholder output count.
        started = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await stream.send({"type": "message_start", "message": started}, event="message_start")
        await stream.send(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            event="content_block_start",
        )
        await stream.send({"type": "ping"}, event="ping")
        for piece in pieces(reply):
            await stream.send(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
                event="content_block_delta",
                is_content=True,
            )
        await stream.send({"type": "content_block_stop", "index": 0}, event="content_block_stop")
        await stream.send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            event="message_delta",
        )
        await stream.send({"type": "message_stop"}, event="message_stop")

    return await MockStream(request, options).run(events)
