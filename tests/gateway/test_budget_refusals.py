"""Budgets at the gateway, over real HTTP: a spent token or team budget is refused before the
upstream sees the call (429 budget_exceeded, Retry-After, the period's end in the message); a
raised budget lets calls through again; the token holder reads its own usage with the token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.pricing.money import format_usd
from tokenmanager.tokens.models import IssuedToken

from .stage import OPENAI_SCOPE, TEAM_ID, AddRoute, UsageRows

LLM_PREFIX = "/api/llm"
BODY: Any = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a priced call"}]}
ONE_MICRO_USD = "0.000001"  # less than any call to gpt-4o-mini costs


@pytest.fixture
async def llm_route(add_route: AddRoute, mock_upstream: str) -> None:
    await add_route(
        path_prefix=LLM_PREFIX,
        upstream_url=f"{mock_upstream}/v1",
        required_scopes=[OPENAI_SCOPE],
        provider="openai",
    )


async def call(client: httpx.AsyncClient, token: IssuedToken) -> httpx.Response:
    return await client.post(
        f"{LLM_PREFIX}/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {token.token_secret}"},
    )


async def test_a_token_past_its_budget_is_refused_until_the_period_ends(
    client: httpx.AsyncClient,
    token: IssuedToken,
    llm_route: None,
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
    usage_rows: UsageRows,
) -> None:
    await services.tokens.update(
        admin, token.token.id, {"budget_usd": ONE_MICRO_USD, "budget_period": "day"}
    )
    await gateway_app.directory.refresh()
    first = await call(client, token)
    assert first.status_code == 200  # nothing spent yet
    refused = await call(client, token)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "daily budget of 0.000001 USD" in error["message"]
    now = datetime.now(UTC)
    tomorrow = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86_400
    assert 0 < int(refused.headers["Retry-After"]) <= tomorrow - now.timestamp() + 1
    assert "renews at" in error["message"]

    rows = await usage_rows(2)
    assert [row.response_status for row in rows] == [200, 429]
    assert rows[1].failure_kind == "budget_exceeded"
    assert rows[1].cost_pusd is None  # refused before the upstream: nothing used


async def test_a_team_budget_binds_every_token_of_the_team(
    client: httpx.AsyncClient,
    token: IssuedToken,
    llm_route: None,
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
) -> None:
    await services.teams.update(admin, TEAM_ID, {"budget_usd": ONE_MICRO_USD})
    await gateway_app.directory.refresh()  # the "team" change drops the team's cached tokens
    assert (await call(client, token)).status_code == 200
    sibling = await services.tokens.issue(
        admin, name="sibling", team_id=TEAM_ID, scopes=[OPENAI_SCOPE]
    )
    refused = await call(client, sibling)
    assert refused.status_code == 429
    assert "the team's monthly budget" in refused.json()["error"]["message"]


async def test_a_raised_budget_lets_calls_through_again(
    client: httpx.AsyncClient,
    token: IssuedToken,
    llm_route: None,
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
) -> None:
    await services.tokens.update(admin, token.token.id, {"budget_usd": ONE_MICRO_USD})
    await gateway_app.directory.refresh()
    await call(client, token)
    assert (await call(client, token)).status_code == 429
    await services.tokens.update(admin, token.token.id, {"budget_usd": "100"})
    await gateway_app.directory.refresh()
    assert (await call(client, token)).status_code == 200


SELF_SERVICE = "/_tokenmanager/usage"


async def test_a_token_reads_its_own_usage_and_budget_with_itself(
    client: httpx.AsyncClient,
    token: IssuedToken,
    llm_route: None,
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
    usage_rows: UsageRows,
) -> None:
    await services.tokens.update(
        admin, token.token.id, {"budget_usd": "10", "budget_period": "month"}
    )
    await gateway_app.directory.refresh()
    for _ in range(3):
        assert (await call(client, token)).status_code == 200
    rows = await usage_rows(3)
    spent_pusd = sum(row.cost_pusd for row in rows)

    answer = await client.get(SELF_SERVICE, headers={"X-API-Key": token.token_secret})
    assert answer.status_code == 200
    usage = answer.json()
    assert usage["token"] == {"id": token.token.id, "name": "gateway test"}
    assert usage["team"] == {"id": TEAM_ID, "name": "Gateway team"}
    assert usage["period"]["kind"] == "month"
    assert usage["calls"] == 3
    assert usage["errors"] == 0
    assert usage["prompt_tokens"] == sum(row.prompt_tokens for row in rows)
    assert usage["completion_tokens"] == sum(row.completion_tokens for row in rows)
    assert usage["cost_usd"] == _usd(spent_pusd)
    assert usage["budget_usd"] == "10"
    assert usage["budget_remaining_usd"] == _usd(10 * 10**12 - spent_pusd)
    assert len(usage["days"]) == 30
    assert usage["days"][-1]["calls"] == 3
    assert sum(day["calls"] for day in usage["days"]) == 3


async def test_self_service_shows_another_teams_token_only_its_own_usage(
    client: httpx.AsyncClient,
    token: IssuedToken,
    llm_route: None,
    services: Services,
    admin: Actor,
    usage_rows: UsageRows,
) -> None:
    await services.teams.create(admin, team_id="other-team", name="Other team")
    stranger = await services.tokens.issue(
        admin, name="stranger", team_id="other-team", scopes=[OPENAI_SCOPE]
    )
    assert (await call(client, token)).status_code == 200
    await usage_rows(1)
    answer = await client.get(SELF_SERVICE, headers={"X-API-Key": stranger.token_secret})
    assert answer.status_code == 200
    usage = answer.json()
    assert usage["token"]["id"] == stranger.token.id
    assert usage["team"]["id"] == "other-team"
    assert usage["calls"] == 0
    assert usage["budget_usd"] is None


async def test_self_service_refuses_a_revoked_or_unknown_token_like_the_gateway(
    client: httpx.AsyncClient,
    token: IssuedToken,
    services: Services,
    admin: Actor,
    gateway_app: GatewayApp,
) -> None:
    unknown = await client.get(SELF_SERVICE, headers={"X-API-Key": "ntk_not-a-token"})
    await services.tokens.revoke(admin, token.token.id)
    await gateway_app.directory.refresh()
    revoked = await client.get(SELF_SERVICE, headers={"X-API-Key": token.token_secret})
    proxied = await client.get("/api/echo/x", headers={"X-API-Key": token.token_secret})
    for answer in (unknown, revoked):
        assert answer.status_code == 401
        assert answer.json() == proxied.json()
        assert answer.headers["www-authenticate"] == proxied.headers["www-authenticate"]
    assert (await client.post(SELF_SERVICE)).status_code == 405


def _usd(pusd: int) -> str:
    return format_usd(pusd)
