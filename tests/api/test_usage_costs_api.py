"""Tokens and cost over HTTP: `/api/usage/costs` by model, team, token and route (viewers see
their teams' calls only), the new figures beside the seed's in stats, token and route answers,
and in recent usage and export. Calls arrive through ingestion, as an edge gateway posts them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken

from .answers import expect_error, get_json
from .usage_records import post_records, seed_record

Client = httpx.AsyncClient
Headers = dict[str, str]
# Default prices: gpt-4o-mini 0.15 / 0.6 USD per million tokens, gpt-4o 2.5 / 10.
MINI = 1000 * 150_000 + 500 * 600_000  # 0.00045 USD
FOUR_O = 2000 * 2_500_000 + 100 * 10_000_000  # 0.006 USD


@pytest.fixture
async def llm_calls(
    app_client: Client,
    services: Services,
    admin: Actor,
    ingest_key_secret: str,
    viewer_headers: Headers,
) -> dict[str, IssuedToken]:
    """team-a's bot: two gpt-4o-mini calls and one of an unpriced model; team-b's bot: one
    gpt-4o call and one whose counts are missing; plus a plain call."""
    issued = {
        team: await services.tokens.issue(admin, name=f"{team} bot", team_id=team)
        for team in ("team-a", "team-b")
    }
    at = (utcnow() - timedelta(hours=1)).isoformat()

    def record(team: str, route: str, **llm: Any) -> dict[str, Any]:
        return seed_record(
            token_hash=hash_token(issued[team].token_secret), route=route, timestamp=at, **llm
        )

    mini = {"model": "gpt-4o-mini", "prompt_tokens": 1000, "completion_tokens": 500}
    await post_records(
        app_client,
        services,
        ingest_key_secret,
        [
            record("team-a", "/openai", **mini),
            record("team-a", "/openai", **mini),
            record("team-a", "/local", model="llama-local", prompt_tokens=5, completion_tokens=5),
            record("team-b", "/openai", model="gpt-4o", prompt_tokens=2000, completion_tokens=100),
            record("team-b", "/openai", model="gpt-4o"),
            record("team-b", "/plain"),
        ],
    )
    return issued


FIGURES = (
    "calls", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens",
    "cost_usd", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip


async def test_costs_by_model_are_most_expensive_first_with_exact_totals(
    app_client: Client, admin_headers: Headers, llm_calls: dict[str, IssuedToken]
) -> None:
    body = await get_json(app_client, admin_headers, "/api/usage/costs?window=24h")

    assert body["group_by"] == "model"
    assert [(row["model"], row["calls"], row["cost_usd"]) for row in body["rows"]] == [
        ("gpt-4o", 2, "0.006"),
        ("gpt-4o-mini", 2, "0.0009"),
        ("llama-local", 1, None),  # no price: unknown, not 0
    ]
    assert all(set(row) == {"model", *FIGURES} for row in body["rows"])
    assert body["rows"][0]["missing_calls"] == 1
    assert body["totals"] == {
        "calls": 5,
        "prompt_tokens": 4005,
        "completion_tokens": 1105,
        "cached_prompt_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": "0.0069",
        "unpriced_calls": 2,
        "estimated_calls": 0,
        "missing_calls": 1,
    }


async def test_costs_by_team_token_and_route(
    app_client: Client, admin_headers: Headers, llm_calls: dict[str, IssuedToken]
) -> None:
    by_team = await get_json(app_client, admin_headers, "/api/usage/costs?group_by=team")
    assert [(r["team_id"], r["cost_usd"]) for r in by_team["rows"]] == [
        ("team-b", "0.006"),
        ("team-a", "0.0009"),
    ]
    by_token = await get_json(app_client, admin_headers, "/api/usage/costs?group_by=token")
    assert [(r["token_id"], r["name"], r["team_id"]) for r in by_token["rows"]] == [
        (llm_calls["team-b"].token.id, "team-b bot", "team-b"),
        (llm_calls["team-a"].token.id, "team-a bot", "team-a"),
    ]
    by_route = await get_json(app_client, admin_headers, "/api/usage/costs?group_by=route")
    assert [(r["route_path"], r["calls"], r["cost_usd"]) for r in by_route["rows"]] == [
        ("/openai", 4, "0.0069"),
        ("/local", 1, None),
    ]


async def test_a_viewer_sees_only_the_costs_charged_to_their_team(
    app_client: Client,
    admin_headers: Headers,
    viewer_headers: Headers,
    llm_calls: dict[str, IssuedToken],
) -> None:
    body = await get_json(app_client, viewer_headers, "/api/usage/costs?group_by=team")
    assert [row["team_id"] for row in body["rows"]] == ["team-a"]
    assert body["totals"]["calls"] == 3
    answer = await app_client.get("/api/usage/costs?team_id=team-b", headers=viewer_headers)
    assert answer.status_code == 404


@pytest.mark.parametrize(
    ("query", "field"), [("group_by=user", "group_by"), ("window=1y", "window")]
)
async def test_bad_costs_query_gets_422_naming_it(
    app_client: Client, admin_headers: Headers, query: str, field: str
) -> None:
    answer = await app_client.get(f"/api/usage/costs?{query}", headers=admin_headers)
    expect_error(answer, 422, field)


async def test_stats_token_and_route_answers_add_tokens_and_cost(
    app_client: Client, admin_headers: Headers, llm_calls: dict[str, IssuedToken]
) -> None:
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")
    overview = stats["overview"]
    assert overview["total_calls"] == 6  # the seed's figures are all still there
    assert (overview["prompt_tokens"], overview["completion_tokens"]) == (4005, 1105)
    assert (overview["cost_usd"], overview["llm_calls"]) == ("0.0069", 5)
    assert (overview["unpriced_calls"], overview["missing_calls"]) == (2, 1)

    token_a = llm_calls["team-a"].token.id
    usage = await get_json(app_client, admin_headers, f"/api/usage/token/{token_a}")
    assert usage["stats"]["cost_usd"] == "0.0009"
    assert usage["stats"]["unpriced_calls"] == 1
    recent = usage["recent_usage"]
    assert sorted((r["model"], r["cost_usd"], r["usage_source"]) for r in recent) == [
        ("gpt-4o-mini", "0.00045", "reported"),
        ("gpt-4o-mini", "0.00045", "reported"),
        ("llama-local", None, "reported"),
    ]
    assert {r["prompt_tokens"] for r in recent} == {1000, 5}

    route = await get_json(app_client, admin_headers, "/api/usage/route?route_path=/local")
    assert route["stats"]["cost_usd"] is None  # LLM calls, none priced
    plain = await get_json(app_client, admin_headers, "/api/usage/route?route_path=/plain")
    assert (plain["stats"]["cost_usd"], plain["stats"]["llm_calls"]) == ("0", 0)


async def test_export_carries_model_counts_source_team_and_cost(
    app_client: Client, admin_headers: Headers, llm_calls: dict[str, IssuedToken]
) -> None:
    answer = await app_client.get("/api/usage/export?format=ndjson", headers=admin_headers)
    assert answer.status_code == 200
    records = [json.loads(line) for line in answer.text.splitlines()]
    mini = [r for r in records if r["model"] == "gpt-4o-mini"]
    assert len(mini) == 2
    assert {(r["team_id"], r["prompt_tokens"], r["usage_source"], r["cost_usd"]) for r in mini} == {
        ("team-a", 1000, "reported", "0.00045")
    }
    csv_answer = await app_client.get("/api/usage/export?format=csv", headers=admin_headers)
    header = csv_answer.text.splitlines()[0].split(",")
    assert {"model", "prompt_tokens", "completion_tokens", "usage_source", "cost_usd"} <= set(
        header
    )
