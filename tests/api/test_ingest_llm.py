"""Ingestion of LLM calls: an edge gateway adds `model` and token counts to the seed's body;
the cost is computed at ingestion from today's prices and never rewritten when prices change;
bad counts are refused naming the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.tokens.codec import hash_token

from .answers import expect_error
from .usage_records import ingest_headers, seed_record, stored_rows

Client = httpx.AsyncClient
SINGLE = "/api/usage-log"
BATCH = "/api/usage-log/batch"
# gpt-4o-mini's default: 0.15 / 0.6 USD per million tokens, cached input 0.075.
MINI_COST_PUSD = 1000 * 150_000 + 200 * 75_000 + 350 * 600_000


async def post_one(client: Client, key_secret: str, record: Any) -> httpx.Response:
    return await client.post(SINGLE, json=record, headers=ingest_headers(key_secret))


def llm_record(token_hash: str, **changes: Any) -> dict[str, Any]:
    return seed_record(
        token_hash=token_hash,
        model="gpt-4o-mini-2024-07-18",
        prompt_tokens=1200,
        completion_tokens=350,
        cached_prompt_tokens=200,
        **changes,
    )


async def test_llm_record_is_stored_with_counts_team_and_cost_at_todays_price(
    app_client: Client,
    services: Services,
    admin: Actor,
    ingest_key_secret: str,
    teams: tuple[str, str],
) -> None:
    issued = await services.tokens.issue(admin, name="edge", team_id="team-b")
    answer = await post_one(
        app_client, ingest_key_secret, llm_record(hash_token(issued.token_secret))
    )

    assert answer.status_code == 200, answer.text
    [row] = await stored_rows(services)
    assert (row.token_id, row.team_id) == (issued.token.id, "team-b")
    assert (row.model, row.prompt_tokens, row.completion_tokens) == (
        "gpt-4o-mini-2024-07-18",
        1200,
        350,
    )
    assert (row.cached_prompt_tokens, row.reasoning_tokens) == (200, None)
    assert row.usage_source == "reported"
    assert row.cost_pusd == MINI_COST_PUSD


async def test_unknown_model_has_no_cost_and_a_model_alone_is_missing_counts(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    records = [
        seed_record(model="in-house-llm-7b", prompt_tokens=10, completion_tokens=5),
        seed_record(model="gpt-4o"),
        seed_record(
            model="gpt-4o", prompt_tokens=10, completion_tokens=3, usage_source="estimated"
        ),
        seed_record(),
    ]
    answer = await app_client.post(BATCH, json=records, headers=ingest_headers(ingest_key_secret))

    assert answer.json()["accepted"] == 4, answer.text
    rows = await stored_rows(services)
    assert [(r.model, r.usage_source, r.prompt_tokens, r.cost_pusd) for r in rows] == [
        ("in-house-llm-7b", "reported", 10, None),
        ("gpt-4o", "missing", None, None),
        ("gpt-4o", "estimated", 10, 10 * 2_500_000 + 3 * 10_000_000),
        (None, None, None, None),
    ]


async def test_a_price_change_applies_from_then_on_and_never_rewrites_stored_costs(
    app_client: Client, services: Services, ingest_key_secret: str, admin: Actor
) -> None:
    first = await post_one(app_client, ingest_key_secret, llm_record("ab" * 32))
    assert first.status_code == 200, first.text
    await stored_rows(services)  # written at the old price
    # gpt-4o-mini at twice its default price (0.15 / 0.6 USD per million tokens)
    await services.prices.set(
        admin, "gpt-4o-mini", input_usd_per_mtok="0.3", output_usd_per_mtok="1.2"
    )
    second = await post_one(app_client, ingest_key_secret, llm_record("ab" * 32))
    assert second.status_code == 200, second.text

    rows = await stored_rows(services)
    assert [row.cost_pusd for row in rows] == [
        MINI_COST_PUSD,
        (1200 * 150_000 + 350 * 600_000) * 2,
    ]


BAD_LLM_FIELDS = {
    "negative-prompt": ({"prompt_tokens": -1}, "prompt_tokens"),
    "text-completion": ({"completion_tokens": "12"}, "completion_tokens"),
    "fractional-prompt": ({"prompt_tokens": 1.5}, "prompt_tokens"),
    "huge-completion": ({"completion_tokens": 10**10}, "completion_tokens"),
    "boolean-cached": ({"cached_prompt_tokens": True}, "cached_prompt_tokens"),
    "cached-over-prompt": ({"cached_prompt_tokens": 5000}, "cached_prompt_tokens"),
    "reasoning-over-completion": ({"reasoning_tokens": 351}, "reasoning_tokens"),
    "unknown-source": ({"usage_source": "guessed"}, "usage_source"),
    "missing-with-counts": ({"usage_source": "missing"}, "usage_source"),
    "model-too-long": ({"model": "m" * 201}, "model"),
    "model-not-text": ({"model": 4}, "model"),
    "cost-is-not-accepted": ({"cost_usd": "1.0"}, "cost_usd"),
}


@pytest.mark.parametrize(
    ("changes", "field"), list(BAD_LLM_FIELDS.values()), ids=list(BAD_LLM_FIELDS)
)
async def test_bad_llm_field_gets_422_naming_it_and_stores_nothing(
    app_client: Client,
    services: Services,
    ingest_key_secret: str,
    changes: dict[str, Any],
    field: str,
) -> None:
    answer = await post_one(app_client, ingest_key_secret, llm_record("ab" * 32) | changes)

    expect_error(answer, 422, field)
    assert await stored_rows(services) == []


async def test_estimated_source_without_counts_is_refused_in_a_batch_item(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    records = [seed_record(model="gpt-4o", usage_source="estimated"), llm_record("ab" * 32)]
    answer = await app_client.post(BATCH, json=records, headers=ingest_headers(ingest_key_secret))

    assert (answer.json()["accepted"], answer.json()["rejected"]) == (1, 1)
    assert answer.json()["errors"][0]["fields"][0]["field"] == "usage_source"
    assert len(await stored_rows(services)) == 1
