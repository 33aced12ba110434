"""The official `openai` and `anthropic` clients (both on httpx2) against the mock upstream
over loopback, every response relayed through a ResponseMeter in the client's transport as the
gateway relays it: the clients see the stream they asked for, the meter reads exact counts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
import openai
import pytest

from tokenmanager.llm import LlmUsage, Provider, ResponseMeter, UsageSource, prepare_request
from tokenmanager.testing import running_mock_upstream

HELLO = [{"role": "user", "content": "hello there"}]
REPLY = "mock reply to: hello there"
REPORTED = UsageSource.REPORTED


class _Relay(httpx2.AsyncByteStream):
    def __init__(self, upstream: httpx2.Response, meter: ResponseMeter, raw: bytearray) -> None:
        self._upstream = upstream
        self._meter = meter
        self._raw = raw

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._upstream.aiter_raw():
            self._raw += chunk
            relayed = self._meter.feed(chunk)
            if relayed:
                yield relayed
        tail = self._meter.flush()
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self._upstream.aclose()


class MeteringTransport(httpx2.AsyncBaseTransport):
    """What the gateway does around a relay, in a client's transport: prepare the request,
    meter the response while relaying it. Keeps each meter and the upstream's raw bytes."""

    def __init__(self, provider: Provider, *, add_stream_usage: bool = True) -> None:
        self._provider = provider
        self._add_stream_usage = add_stream_usage
        self._inner = httpx2.AsyncHTTPTransport()
        self.meters: list[ResponseMeter] = []
        self.sent: list[bytes] = []
        self.received: list[bytearray] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        prepared = prepare_request(
            self._provider, request.url.path, body, add_stream_usage=self._add_stream_usage
        )
        headers = httpx2.Headers(request.headers)
        headers["Content-Length"] = str(len(prepared.body))
        upstream_request = httpx2.Request(
            request.method, request.url, headers=headers, content=prepared.body
        )
        upstream = await self._inner.handle_async_request(upstream_request)
        meter = ResponseMeter(
            self._provider,
            prepared,
            status=upstream.status_code,
            content_type=upstream.headers.get("Content-Type"),
        )
        self.meters.append(meter)
        self.sent.append(prepared.body)
        self.received.append(bytearray())
        return httpx2.Response(
            upstream.status_code,
            headers=upstream.headers,
            stream=_Relay(upstream, meter, self.received[-1]),
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running_mock_upstream() as base:
        yield base


def openai_client(base: str, transport: MeteringTransport) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-mock",
        base_url=f"{base}/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )


def anthropic_client(base: str, transport: MeteringTransport) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-mock",
        base_url=base,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )


async def test_openai_chat_json(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    async with openai_client(upstream, transport) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_body={"mock_cached_tokens": 2}
        )
    assert completion.choices[0].message.content == REPLY
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 5
    (meter,) = transport.meters
    assert meter.result() == LlmUsage("gpt-4o", 5, 5, 2, None, REPORTED)


async def test_openai_stream_without_usage_gets_the_stream_it_asked_for(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    async with openai_client(upstream, transport) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert all("usage" not in chunk.model_dump(exclude_unset=True) for chunk in chunks)
    # The upstream was asked for usage and sent it; the meter took it out and read it.
    assert b'"include_usage":true' in transport.sent[0]
    assert b'"choices":[]' in transport.received[0]
    assert transport.meters[0].result() == LlmUsage("gpt-4o", 5, 5, None, None, REPORTED)


async def test_openai_stream_asking_for_usage_gets_it(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    async with openai_client(upstream, transport) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"mock_reasoning_tokens": 4},
        )
        chunks = [chunk async for chunk in stream]
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (5, 9)
    assert transport.meters[0].result() == LlmUsage("gpt-4o", 5, 9, None, 4, REPORTED)


async def test_openai_long_stream_is_counted_exactly(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    async with openai_client(upstream, transport) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, extra_body={"mock_chunks": 2000}
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert len(text.split()) == 2000
    assert transport.meters[0].result() == LlmUsage("gpt-4o-mini", 5, 2000, None, None, REPORTED)


async def test_openai_stream_reset_by_the_upstream_is_estimated_not_zero(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    received: list[str] = []
    async with openai_client(upstream, transport) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=HELLO, stream=True, extra_body={"mock_reset_after": 3}
        )

        async def read_all() -> None:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")

        with pytest.raises((httpx2.HTTPError, openai.APIError)):
            await read_all()
    assert "".join(received) == "mock reply to:"
    result = transport.meters[0].result()
    assert result.usage_source is UsageSource.ESTIMATED
    assert result.model == "gpt-4o"
    assert result.completion_tokens is not None
    assert result.completion_tokens > 0
    assert result.prompt_tokens is not None
    assert result.prompt_tokens > 0


async def test_openai_legacy_completions_and_embeddings(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    async with openai_client(upstream, transport) as client:
        stream = await client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="say hi", stream=True
        )
        text = "".join([c.choices[0].text async for c in stream])
        embedded = await client.embeddings.create(
            model="text-embedding-3-small", input=["one two", "three"]
        )
    assert text == "mock reply to: say hi"
    assert len(embedded.data) == 2
    assert embedded.usage.prompt_tokens == 3
    completions_meter, embeddings_meter = transport.meters
    assert completions_meter.result() == LlmUsage(
        "gpt-3.5-turbo-instruct", 2, 5, None, None, REPORTED
    )
    assert embeddings_meter.result() == LlmUsage(
        "text-embedding-3-small", 3, 0, None, None, REPORTED
    )


async def test_openai_responses_json_and_stream(upstream: str) -> None:
    transport = MeteringTransport(Provider.OPENAI)
    async with openai_client(upstream, transport) as client:
        response = await client.responses.create(
            model="gpt-5", input="hello there", extra_body={"mock_reasoning_tokens": 6}
        )
        stream = await client.responses.create(model="gpt-5", input="hello there", stream=True)
        events = [event async for event in stream]
    assert response.output_text == REPLY
    assert response.usage is not None
    assert response.usage.output_tokens == 11
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens == 5
    # The Responses API reports usage anyway: its request is never rewritten.
    assert b"stream_options" not in transport.sent[1]
    json_meter, stream_meter = transport.meters
    assert json_meter.result() == LlmUsage("gpt-5", 5, 11, 0, 6, REPORTED)
    assert stream_meter.result() == LlmUsage("gpt-5", 5, 5, 0, 0, REPORTED)


async def test_anthropic_messages_json_and_stream(upstream: str) -> None:
    transport = MeteringTransport(Provider.ANTHROPIC)
    async with anthropic_client(upstream, transport) as client:
        message = await client.messages.create(
            model="claude-sonnet-4-20250514",
            max_tokens=100,
            messages=[{"role": "user", "content": "hello there"}],
            extra_body={"mock_cached_tokens": 3},
        )
        async with client.messages.stream(
            model="claude-3-5-haiku-20241022",
            max_tokens=100,
            system="you are terse",
            messages=[{"role": "user", "content": "hello there"}],
            extra_body={"mock_cached_tokens": 4, "mock_cache_creation_tokens": 2},
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
    assert message.content[0].type == "text"
    assert message.content[0].text == REPLY
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (2, 3)
    assert text == REPLY
    assert final.usage.output_tokens == 5
    assert final.usage.input_tokens == 5
    json_meter, stream_meter = transport.meters
    # prompt_tokens = input + cache reads + cache writes; cached = the cache reads.
    assert json_meter.result() == LlmUsage("claude-sonnet-4-20250514", 5, 5, 3, None, REPORTED)
    assert stream_meter.result() == LlmUsage("claude-3-5-haiku-20241022", 11, 5, 4, None, REPORTED)


async def test_anthropic_error_bills_nothing(upstream: str) -> None:
    transport = MeteringTransport(Provider.ANTHROPIC)
    async with anthropic_client(upstream, transport) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(
                model="claude-sonnet-4-20250514",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"mock_chunks": -1},
            )
    assert transport.meters[0].result() == LlmUsage(
        "claude-sonnet-4-20250514", 0, 0, None, None, REPORTED
    )
