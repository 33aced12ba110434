"""LLM calls through the gateway: what is recorded equals what the upstream itself reports, for
every format, through the official clients; the client's bytes are never altered by the
accounting; streams without a report are estimated, never 0; costs are fixed when recorded.

The oracle is the mock upstream's own usage report for the same request, read directly.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.tokens.models import IssuedToken

from .stage import OPENAI_SCOPE, AddRoute, UsageRows

OPENAI_PREFIX = "/api/openai"
ANTHROPIC_PREFIX = "/api/anthropic"
PRICES = {price.model: price for price in DEFAULT_PRICES}
MESSAGES: Any = [{"role": "user", "content": "how many tokens does this little prompt take"}]


@pytest.fixture
async def openai_route(add_route: AddRoute, mock_upstream: str) -> None:
    await add_route(
        path_prefix=OPENAI_PREFIX,
        upstream_url=f"{mock_upstream}/v1",
        required_scopes=[OPENAI_SCOPE],
        provider="openai",
    )


@pytest.fixture
async def anthropic_route(add_route: AddRoute, mock_upstream: str) -> None:
    await add_route(
        path_prefix=ANTHROPIC_PREFIX,
        upstream_url=mock_upstream,
        required_scopes=[OPENAI_SCOPE],
        provider="anthropic",
    )


@pytest.fixture
async def openai_client(
    gateway: str, token: IssuedToken, openai_route: None
) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=f"{gateway}{OPENAI_PREFIX}", api_key=token.token_secret, max_retries=0
    )
    yield client
    await client.close()


@pytest.fixture
async def anthropic_client(
    gateway: str, token: IssuedToken, anthropic_route: None
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=f"{gateway}{ANTHROPIC_PREFIX}", api_key=token.token_secret, max_retries=0
    )
    yield client
    await client.close()


async def upstream_report(mock_upstream: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The mock's own usage for `body`, asked directly (a stream's final usage chunk)."""
    async with httpx.AsyncClient(base_url=mock_upstream) as direct:
        answer = await direct.post(path, json={**body, "stream": False})
    usage: dict[str, Any] = answer.json()["usage"]
    return usage


def expected_cost_pusd(model: str, prompt: int, completion: int, cached: int = 0) -> int:
    price = PRICES[model]
    cached_rate = price.cached_input_micro_usd_per_mtok or price.input_micro_usd_per_mtok
    return (
        (prompt - cached) * price.input_micro_usd_per_mtok
        + cached * cached_rate
        + completion * price.output_micro_usd_per_mtok
    )


async def test_a_chat_completion_records_the_upstreams_counts_and_their_exact_cost(
    openai_client: openai.AsyncOpenAI, usage_rows: UsageRows
) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
    )
    assert completion.usage is not None
    [row] = await usage_rows(1)
    assert row.model == completion.model
    assert row.prompt_tokens == completion.usage.prompt_tokens
    assert row.completion_tokens == completion.usage.completion_tokens
    assert row.prompt_tokens > 0
    assert row.completion_tokens > 0
    assert row.usage_source == "reported"
    assert row.cost_pusd == expected_cost_pusd(
        "gpt-4o-mini", completion.usage.prompt_tokens, completion.usage.completion_tokens
    )


async def test_a_stream_that_did_not_ask_for_usage_is_counted_and_the_client_sees_none(
    openai_client: openai.AsyncOpenAI, usage_rows: UsageRows, mock_upstream: str
) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert chunks
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the client
    report = await upstream_report(
        mock_upstream, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES}
    )
    [row] = await usage_rows(1)
    assert (row.prompt_tokens, row.completion_tokens) == (
        report["prompt_tokens"],
        report["completion_tokens"],
    )
    assert row.usage_source == "reported"
    assert row.cost_pusd == expected_cost_pusd(
        "gpt-4o-mini", report["prompt_tokens"], report["completion_tokens"]
    )


_CREATED = re.compile(rb'"created":\s*\d+')


async def _stream_bytes(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> bytes:
    async with client.stream("POST", url, json=body) as answer:
        assert answer.status_code == 200
        return _CREATED.sub(b'"created":0', b"".join([c async for c in answer.aiter_raw()]))


async def test_the_clients_stream_is_byte_identical_to_the_upstreams_without_the_option(
    gateway: str, token: IssuedToken, openai_route: None, mock_upstream: str
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {token.token_secret}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        through_gateway = await _stream_bytes(
            client, f"{gateway}{OPENAI_PREFIX}/chat/completions", body
        )
        direct = await _stream_bytes(client, f"{mock_upstream}/v1/chat/completions", body)
    assert b'"usage"' not in through_gateway
    assert through_gateway == direct


async def test_a_client_that_asked_for_usage_gets_it_unchanged(
    gateway: str, token: IssuedToken, openai_route: None, mock_upstream: str, usage_rows: UsageRows
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {token.token_secret}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        through_gateway = await _stream_bytes(
            client, f"{gateway}{OPENAI_PREFIX}/chat/completions", body
        )
        direct = await _stream_bytes(client, f"{mock_upstream}/v1/chat/completions", body)
    assert through_gateway == direct
    assert b'"prompt_tokens"' in through_gateway
    [row] = await usage_rows(1)
    assert row.usage_source == "reported"


async def test_a_route_that_may_not_add_the_option_estimates_its_streams(
    gateway: str, token: IssuedToken, add_route: AddRoute, mock_upstream: str, usage_rows: UsageRows
) -> None:
    await add_route(
        path_prefix="/api/plain-llm",
        upstream_url=f"{mock_upstream}/v1",
        required_scopes=[OPENAI_SCOPE],
        provider="openai",
        include_stream_usage=False,
    )
    client = openai.AsyncOpenAI(
        base_url=f"{gateway}/api/plain-llm", api_key=token.token_secret, max_retries=0
    )
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    await client.close()
    assert text
    [row] = await usage_rows(1)
    assert row.usage_source == "estimated"
    assert row.prompt_tokens > 0
    assert row.completion_tokens > 0
    assert row.cost_pusd == expected_cost_pusd(
        "gpt-4o-mini", row.prompt_tokens, row.completion_tokens
    )


async def test_an_unpriced_model_is_counted_with_a_null_cost(
    openai_client: openai.AsyncOpenAI, usage_rows: UsageRows
) -> None:
    completion = await openai_client.chat.completions.create(
        model="local-llama-unpriced",
        messages=MESSAGES,
    )
    assert completion.usage is not None
    [row] = await usage_rows(1)
    assert row.prompt_tokens == completion.usage.prompt_tokens
    assert row.cost_pusd is None


async def test_embeddings_and_the_responses_api_are_counted(
    openai_client: openai.AsyncOpenAI, usage_rows: UsageRows
) -> None:
    embedding = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=["first text", "second, longer text"]
    )
    response = await openai_client.responses.create(model="gpt-4o-mini", input="say hello")
    assert response.usage is not None
    first, second = await usage_rows(2)
    assert first.prompt_tokens == embedding.usage.prompt_tokens
    assert first.completion_tokens == 0
    assert first.usage_source == "reported"
    assert second.prompt_tokens == response.usage.input_tokens
    assert second.completion_tokens == response.usage.output_tokens
    assert second.usage_source == "reported"


async def test_anthropic_messages_are_counted_as_json_and_as_a_stream(
    anthropic_client: anthropic.AsyncAnthropic, usage_rows: UsageRows
) -> None:
    message = await anthropic_client.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
    )
    async with anthropic_client.messages.stream(
        model="claude-sonnet-4-20250514",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
    ) as stream:
        final = await stream.get_final_message()
    first, second = await usage_rows(2)
    for row, answer in ((first, message), (second, final)):
        assert row.model == answer.model
        assert row.prompt_tokens == answer.usage.input_tokens
        assert row.completion_tokens == answer.usage.output_tokens > 0
        assert row.usage_source == "reported"
        assert row.cost_pusd == expected_cost_pusd(
            "claude-sonnet-4", row.prompt_tokens, row.completion_tokens
        )


async def test_a_client_leaving_mid_stream_is_recorded_once_as_estimated_never_zero(
    gateway: str, token: IssuedToken, openai_route: None, usage_rows: UsageRows
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "mock_chunks": 500,
        "mock_interval_ms": 20,
    }
    headers = {"Authorization": f"Bearer {token.token_secret}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=10) as client,
        client.stream("POST", f"{gateway}{OPENAI_PREFIX}/chat/completions", json=body) as answer,
    ):
        received = 0
        async for chunk in answer.aiter_raw():
            received += chunk.count(b"data: ")
            if received >= 5:
                break
    rows = await usage_rows(1)
    assert len(rows) == 1
    [row] = rows
    assert row.response_status == 499
    assert row.usage_source == "estimated"
    assert row.prompt_tokens > 0
    assert row.completion_tokens > 0


async def _read_all(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    async with client.stream("POST", url, json=body) as answer:
        async for _ in answer.aiter_raw():
            pass


async def test_an_upstream_reset_mid_stream_is_recorded_as_estimated(
    gateway: str, token: IssuedToken, openai_route: None, usage_rows: UsageRows
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "mock_reset_after": 3}
    headers = {"Authorization": f"Bearer {token.token_secret}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        with pytest.raises(httpx.HTTPError):
            await _read_all(client, f"{gateway}{OPENAI_PREFIX}/chat/completions", body)
    [row] = await usage_rows(1)
    assert row.failure_kind == "upstream_reset"
    assert row.usage_source == "estimated"
    assert row.completion_tokens > 0


async def test_a_non_llm_route_records_no_llm_fields(
    client: httpx.AsyncClient, token: IssuedToken, usage_rows: UsageRows
) -> None:
    answer = await client.post(
        "/api/echo/chat", headers={"X-API-Key": token.token_secret}, json={"model": "gpt-4o"}
    )
    assert answer.status_code == 200
    [row] = await usage_rows(1)
    assert (row.model, row.prompt_tokens, row.usage_source, row.cost_pusd) == (None,) * 4


async def test_a_price_change_applies_to_later_calls_and_leaves_recorded_costs_alone(
    openai_client: openai.AsyncOpenAI,
    usage_rows: UsageRows,
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
) -> None:
    await openai_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [before] = await usage_rows(1)
    await services.prices.set(admin, "gpt-4o-mini", input_usd_per_mtok="1", output_usd_per_mtok="2")
    await gateway_app.directory.refresh()
    await openai_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    first, second = await usage_rows(2)
    assert first.cost_pusd == before.cost_pusd
    new_price_pusd = second.prompt_tokens * 1_000_000 + second.completion_tokens * 2_000_000
    assert second.cost_pusd == new_price_pusd
    assert new_price_pusd != first.cost_pusd
