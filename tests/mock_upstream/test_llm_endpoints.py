"""The mock upstream's LLM endpoints over loopback: deterministic usage by the documented rule,
OpenAI's include_usage shapes in compact JSON, and the stream behaviours tests ask for."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tokenmanager.testing import running_mock_upstream


@pytest.fixture
async def post() -> AsyncIterator[Any]:
    async with running_mock_upstream() as base, aiohttp.ClientSession() as session:

        async def send(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
            async with session.post(base + path, json=body) as response:
                return response.status, await response.read()

        yield send


def events(body: bytes) -> list[Any]:
    data = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    return [json.loads(item) if item != b"[DONE]" else "[DONE]" for item in data]


async def test_chat_usage_follows_the_word_rule(post: Any) -> None:
    messages = [
        {"role": "system", "content": "you are a mock"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "two words"},
                {"type": "text", "text": "three more words"},
            ],
        },
    ]
    status, body = await post("/v1/chat/completions", {"model": "m", "messages": messages})
    assert status == 200
    assert b", " not in body.replace(b"mock reply to: two words three more words", b"")
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"] == "mock reply to: two words three more words"
    # (4 + 3) + (5 + 3) prompt; 8 words in the reply.
    assert answer["usage"] == {"prompt_tokens": 15, "completion_tokens": 8, "total_tokens": 23}


async def test_details_are_reported_when_asked(post: Any) -> None:
    _, body = await post(
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "a b c"}],
            "mock_cached_tokens": 100,
            "mock_reasoning_tokens": 4,
        },
    )
    assert json.loads(body)["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 10,
        "total_tokens": 16,
        "prompt_tokens_details": {"cached_tokens": 6},  # never more than the prompt
        "completion_tokens_details": {"reasoning_tokens": 4},
    }


async def test_include_usage_adds_usage_null_to_every_chunk_and_a_usage_chunk(post: Any) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    _, plain = await post("/v1/chat/completions", request)
    _, asked = await post(
        "/v1/chat/completions", {**request, "stream_options": {"include_usage": True}}
    )
    _, ignored = await post(
        "/v1/chat/completions",
        {**request, "stream_options": {"include_usage": True}, "mock_ignore_include_usage": True},
    )
    chunks = events(asked)
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert all(chunk["usage"] is None for chunk in chunks[:-2])
    assert asked.replace(b',"usage":null', b"").startswith(plain[: -len(b"data: [DONE]\n\n")])
    assert ignored == plain
    assert all("usage" not in chunk for chunk in events(plain)[:-1])


async def test_a_long_slow_stream_sends_the_chunks_asked_for(post: Any) -> None:
    _, body = await post(
        "/v1/chat/completions",
        {"messages": [], "stream": True, "mock_chunks": 50, "mock_interval_ms": 1},
    )
    contents = [c["choices"][0]["delta"].get("content") for c in events(body)[:-1]]
    assert "".join(c or "" for c in contents).split() == [f"w{i}" for i in range(50)]


async def test_a_reset_breaks_the_stream_off(post: Any) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(
            "/v1/messages",
            {
                "max_tokens": 5,
                "messages": [],
                "stream": True,
                "mock_chunks": 10,
                "mock_reset_after": 2,
            },
        )


@pytest.mark.parametrize(
    "bad",
    [{"mock_chunks": -1}, {"mock_chunks": "5"}, {"mock_interval_ms": True}, {"mock_reply": 5}],
)
async def test_bad_mock_options_are_a_400(post: Any, bad: dict[str, Any]) -> None:
    status, _ = await post("/v1/responses", {"input": "hi", **bad})
    assert status == 400


async def test_embeddings_count_words_and_token_arrays(post: Any) -> None:
    _, body = await post(
        "/v1/embeddings", {"model": "e", "input": [[1, 2, 3], [4]], "dimensions": 2}
    )
    answer = json.loads(body)
    assert answer["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [len(item["embedding"]) for item in answer["data"]] == [2, 2]


async def test_anthropic_stream_sends_every_event_kind_and_an_error_shape(post: Any) -> None:
    _, body = await post(
        "/v1/messages",
        {
            "model": "c",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
    )
    kinds = [line[7:] for line in body.split(b"\n") if line.startswith(b"event: ")]
    assert kinds == [
        b"message_start",
        b"content_block_start",
        b"ping",
        *[b"content_block_delta"] * 4,
        b"content_block_stop",
        b"message_delta",
        b"message_stop",
    ]
    status, error = await post("/v1/messages", {"model": "c", "messages": []})
    assert status == 400
    assert json.loads(error)["type"] == "error"


async def test_responses_stream_reports_usage_in_response_completed(post: Any) -> None:
    _, body = await post("/v1/responses", {"model": "r", "input": "hi", "stream": True})
    last = events(body)[-1]
    assert last["type"] == "response.completed"
    assert last["response"]["usage"]["input_tokens"] == 4
    assert last["response"]["usage"]["output_tokens"] == 4
