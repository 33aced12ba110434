"""Bytes from the real mock upstream over loopback, fetched once per session, for the meter's
tests (hypothesis tests are synchronous and re-split the same bytes many times)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tokenmanager.llm import PreparedRequest, Provider, prepare_request
from tokenmanager.testing import running_mock_upstream

HELLO = [{"role": "user", "content": "hello there"}]


@dataclass(frozen=True)
class Exchange:
    """One request as prepared for the upstream and the upstream's answer, byte for byte."""

    provider: Provider
    prepared: PreparedRequest
    status: int
    content_type: str | None
    body: bytes


# name: (provider, path, request body, add_stream_usage)
CASES: dict[str, tuple[Provider, str, dict[str, Any], bool]] = {
    "chat_json": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HELLO},
        True,
    ),
    "chat_json_details": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "o3", "messages": HELLO, "mock_cached_tokens": 2, "mock_reasoning_tokens": 7},
        True,
    ),
    "chat_sse_plain": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HELLO, "stream": True},
        False,
    ),
    "chat_sse_added": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HELLO, "stream": True},
        True,
    ),
    "chat_sse_asked": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
            "mock_cached_tokens": 3,
        },
        True,
    ),
    "chat_sse_ignored": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HELLO, "stream": True, "mock_ignore_include_usage": True},
        True,
    ),
    "completions_json": (
        Provider.OPENAI,
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi to me"},
        True,
    ),
    "completions_sse_plain": (
        Provider.OPENAI,
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi to me", "stream": True},
        False,
    ),
    "completions_sse_added": (
        Provider.OPENAI,
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi to me", "stream": True},
        True,
    ),
    "embeddings_json": (
        Provider.OPENAI,
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["one two", "three", [1, 2, 3, 4]]},
        True,
    ),
    "embeddings_large": (
        Provider.OPENAI,
        "/v1/embeddings",
        {"model": "text-embedding-3-large", "input": ["a b c"] * 40, "dimensions": 3072},
        True,
    ),
    "responses_json": (
        Provider.OPENAI,
        "/v1/responses",
        {
            "model": "gpt-5",
            "input": "hello there",
            "instructions": "be brief",
            "mock_cached_tokens": 4,
            "mock_reasoning_tokens": 11,
        },
        True,
    ),
    "responses_sse": (
        Provider.OPENAI,
        "/v1/responses",
        {"model": "gpt-5", "input": [{"role": "user", "content": "hello there"}], "stream": True},
        True,
    ),
    "messages_json": (
        Provider.ANTHROPIC,
        "/v1/messages",
        {"model": "claude-sonnet-4-20250514", "max_tokens": 100, "messages": HELLO},
        True,
    ),
    "messages_sse": (
        Provider.ANTHROPIC,
        "/v1/messages",
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 100,
            "system": "you are terse",
            "messages": HELLO,
            "stream": True,
            "mock_cached_tokens": 4,
            "mock_cache_creation_tokens": 2,
        },
        True,
    ),
    "messages_error": (
        Provider.ANTHROPIC,
        "/v1/messages",
        {"model": "claude-sonnet-4-20250514", "messages": HELLO},
        True,
    ),
    "chat_sse_long": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HELLO, "stream": True, "mock_chunks": 300},
        True,
    ),
    "chat_sse_long_plain": (
        Provider.OPENAI,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HELLO, "stream": True, "mock_chunks": 300},
        False,
    ),
}


async def _fetch_all() -> dict[str, Exchange]:
    exchanges = {}
    async with (
        running_mock_upstream() as base,
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        for name, (provider, path, body, add) in CASES.items():
            prepared = prepare_request(
                provider, path, json.dumps(body).encode(), add_stream_usage=add
            )
            async with session.post(
                base + path, data=prepared.body, headers={"Content-Type": "application/json"}
            ) as response:
                exchanges[name] = Exchange(
                    provider,
                    prepared,
                    response.status,
                    response.headers.get("Content-Type"),
                    await response.read(),
                )
    return exchanges


@pytest.fixture(scope="session")
def exchanges() -> dict[str, Exchange]:
    return asyncio.run(_fetch_all())
