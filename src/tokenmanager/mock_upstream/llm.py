"""What the mock's LLM endpoints share: the request's mock options, the deterministic token
counting rule, and writing a stream that can be slow, long, or reset on demand.

Token counting rule (tests assert it): a text's tokens are its whitespace-separated words;
a chat or Responses prompt is the words of every message (system and instructions included)
plus 3 per message; a legacy completion or embeddings prompt is the words of each input
string (a token-id array counts its length); the completion is the words of the reply, plus
`mock_reasoning_tokens` when asked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CREATED = 1_767_225_600  # fixed, so two answers to the same request are byte-identical
MESSAGE_TOKENS = 3


def dumps(value: Any) -> str:
    """Compact JSON, as OpenAI and Anthropic send it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


def words(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    """The text of a message content: a string, or the text of its parts, space-joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [text_of(part.get("text")) for part in content if isinstance(part, dict)]
        return " ".join(text for text in texts if text)
    return ""


def _int_option(body: dict[str, Any], name: str, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise web.HTTPBadRequest(text=f"{name} must be an integer from 0 to {maximum}")
    return value


@dataclass(frozen=True, slots=True)
class MockOptions:
    """Body fields a test adds to an LLM request to shape the answer (an upstream ignores
    unknown fields; the gateway passes them through)."""

    chunks: int | None  # mock_chunks: reply with this many words "w0 w1 ...", one per chunk
    interval_ms: int  # mock_interval_ms: pause between stream chunks
    reset_after: int | None  # mock_reset_after: reset the connection after this many chunks
    ignores_include_usage: bool  # mock_ignore_include_usage: act like a provider that does
    cached_tokens: int | None  # mock_cached_tokens: part of the prompt "read from a cache"
    cache_creation_tokens: int | None  # mock_cache_creation_tokens (Anthropic)
    reasoning_tokens: int | None  # mock_reasoning_tokens: added to the completion
    reply: str | None  # mock_reply: the reply text instead of "mock reply to: ..."

    @classmethod
    def parse(cls, body: dict[str, Any]) -> MockOptions:
        reply = body.get("mock_reply")
        if reply is not None and not isinstance(reply, str):
            raise web.HTTPBadRequest(text="mock_reply must be a string")
        return cls(
            chunks=_int_option(body, "mock_chunks", 10_000_000),
            interval_ms=_int_option(body, "mock_interval_ms", 60_000) or 0,
            reset_after=_int_option(body, "mock_reset_after", 10_000_000),
            ignores_include_usage=body.get("mock_ignore_include_usage") is True,
            cached_tokens=_int_option(body, "mock_cached_tokens", 10**9),
            cache_creation_tokens=_int_option(body, "mock_cache_creation_tokens", 10**9),
            reasoning_tokens=_int_option(body, "mock_reasoning_tokens", 10**9),
            reply=reply,
        )

    def reply_to(self, prompt_text: str) -> str:
        if self.chunks is not None:
            return " ".join(f"w{index}" for index in range(self.chunks))
        if self.reply is not None:
            return self.reply
        return f"mock reply to: {prompt_text}"


def pieces(reply: str) -> list[str]:
    """The reply cut into stream deltas, one word each; joined, they give the reply back."""
    parts = reply.split(" ")
    return [part if index == 0 else " " + part for index, part in enumerate(parts)]


async def read_json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(text="invalid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


class StreamResetError(Exception):
    """The mock reset the connection on purpose: the handler stops writing."""


class MockStream:
    """An SSE response written event by event, paced and reset as the options say."""

    def __init__(self, request: web.Request, options: MockOptions) -> None:
        self._request = request
        self._options = options
        self._response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        self._content_events = 0

    async def run(self, events: Callable[[MockStream], Awaitable[None]]) -> web.StreamResponse:
        """Send the headers, then the events; ends the body unless the stream was reset."""
        await self._response.prepare(self._request)
        try:
            await events(self)
        except StreamResetError:
            return self._response
        await self._response.write_eof()
        return self._response

    async def send(self, data: Any, *, event: str | None = None, is_content: bool = False) -> None:
        text = data if isinstance(data, str) else dumps(data)
        prefix = f"event: {event}\n" if event else ""
        await self._response.write(f"{prefix}data: {text}\n\n".encode())
        if not is_content:
            return
        self._content_events += 1
        if (
            self._options.reset_after is not None
            and self._content_events >= self._options.reset_after
        ):
            transport = self._request.transport
            assert transport is not None
            transport.abort()  # RST mid-stream, as an upstream that breaks off
            raise StreamResetError
        if self._options.interval_ms:
            await asyncio.sleep(self._options.interval_ms / 1000)
