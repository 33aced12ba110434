"""`usage reprice` in the store on both backends: costs recomputed at today's prices for the
calls in the range (and model) only, every sum holding them moved by exactly the change (equal
to recording the calls at the new prices), nothing changed without it, nothing on a rerun."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tokenmanager.composition import Services
from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.pricing.book import PriceBook
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.storage.reprice import reprice
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.usage.events import UsageEvent

from .test_store_llm_usage import (
    KOLKATA,
    T0,
    copies,
    insert,
    make_llm_events,
    oracle,
    stored,
)

# Today's prices: the defaults, gpt-4o doubled, claude-sonnet-4 withdrawn.
TODAY = PriceBook.of(
    replace(p, input_micro_usd_per_mtok=p.input_micro_usd_per_mtok * 2)
    if p.model == "gpt-4o"
    else p
    for p in DEFAULT_PRICES
    if p.model != "claude-sonnet-4"
)


def usage_of(event: UsageEvent) -> LlmUsage:
    return LlmUsage(
        event.model, event.prompt_tokens, event.completion_tokens, event.cached_prompt_tokens,
        event.reasoning_tokens, UsageSource(event.usage_source or "missing"),
    )  # fmt: skip


def repriced(events: list[UsageEvent], chosen: set[str]) -> list[UsageEvent]:
    """The events as if recorded at TODAY's prices, those in `chosen` (event ids) only."""
    return [
        replace(e, cost_pusd=TODAY.cost_for(usage_of(e)))
        if e.event_id in chosen and e.usage_source is not None
        else e
        for e in events
    ]


@pytest.mark.parametrize("model", [None, "gpt-4o"])
async def test_reprice_moves_raw_costs_rollups_cost_figures_and_spend_by_the_change(
    services: Services,
    tokens_of_two_teams: list[IssuedToken],
    model: str | None,
) -> None:
    events = make_llm_events(tokens_of_two_teams, 700, seed=11)
    ids = {hash_token(t.token_secret): (t.token.id, t.token.team_id) for t in tokens_of_two_teams}
    await insert(services, copies(events))
    recorded = await stored(services)
    assert recorded == {**oracle(events, ids), "daily_cost": recorded["daily_cost"]}

    since, until = T0 + timedelta(minutes=50), T0 + timedelta(hours=3, minutes=10)
    chosen = {
        e.event_id
        for e in events
        if since <= e.used_at < until and (model is None or e.model == model)
    }
    result = await reprice(
        services.database, since, until, cost_for=TODAY.cost_for, zone=KOLKATA, model=model,
        chunk_rows=97,
    )  # fmt: skip

    expected = repriced(events, chosen)
    assert result.calls == sum(1 for e in events if e.event_id in chosen and e.usage_source)
    assert result.changed == sum(
        1 for old, new in zip(events, expected, strict=True) if old.cost_pusd != new.cost_pusd
    )
    assert result.changed > 0
    after = await stored(services)
    assert {k: v for k, v in after.items() if k != "daily_cost"} == oracle(expected, ids)
    assert after["daily_cost"] == sum(e.cost_pusd or 0 for e in expected)

    again = await reprice(
        services.database, since, until, cost_for=TODAY.cost_for, zone=KOLKATA, model=model
    )
    assert again.changed == 0
    assert await stored(services) == after
