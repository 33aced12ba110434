"""LLM usage in the store on both backends: the new raw columns, the rollups' token and cost
sums with the counts of unknowns, the per-model cost rollup and the spend per local day and
month, each equal to a plain-Python oracle over the events, and none counted twice on replay."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from tokenmanager.composition import Services
from tokenmanager.storage import maintenance
from tokenmanager.storage import usage as usage_sql
from tokenmanager.storage.schema import (
    token_usage_logs,
    usage_cost_hourly,
    usage_daily,
    usage_hourly,
    usage_spend,
)
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.usage.events import UsageEvent

KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: local days start at 18:30 UTC
# Spans 18:30 UTC on the last day of a month: two local days and two local months.
T0 = datetime(2030, 3, 31, 17, 0, tzinfo=UTC)
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", None]


def make_llm_events(issued: list[IssuedToken], count: int, seed: int = 1) -> list[UsageEvent]:
    """LLM and plain calls: reported, estimated and missing counts; priced and unpriced."""
    rng = random.Random(seed)
    events = []
    for _ in range(count):
        token = rng.choice(issued)
        source = rng.choice(["reported", "reported", "estimated", "missing", None])
        known = source in ("reported", "estimated")
        prompt = rng.randrange(1, 5000) if known else None
        completion = rng.randrange(0, 2000) if known else None
        events.append(
            UsageEvent(
                token_hash=hash_token(token.token_secret),
                # Half the events come with their token id (the gateway), half with the
                # hash only (ingestion): the team is resolved from the token either way.
                token_id=token.token.id if rng.random() < 0.5 else None,
                route_path=rng.choice(["/openai", "/anthropic", None]),
                used_at=T0 + timedelta(seconds=rng.randrange(4 * 3600)),
                response_status=rng.choice([200, 200, 429, 500]),
                response_time_ms=rng.randrange(10, 5000),
                model=rng.choice(MODELS) if source else None,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_prompt_tokens=rng.randrange(0, prompt)
                if prompt and rng.random() < 0.3
                else None,
                reasoning_tokens=rng.randrange(0, completion + 1)
                if completion and rng.random() < 0.2
                else None,
                usage_source=source,
                cost_pusd=rng.randrange(0, 10**10) if known and rng.random() < 0.8 else None,
            )
        )
    return events


def local_start(moment: datetime, period: str) -> datetime:
    """Kolkata's day or month start in UTC, the obvious way (no DST there)."""
    offset = timedelta(hours=5, minutes=30)
    local = moment.astimezone(UTC) + offset
    local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        local = local.replace(day=1)
    return local - offset


def oracle(events: list[UsageEvent], ids: dict[str, tuple[int, str]]) -> dict[str, Any]:
    hourly: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 7)
    costs: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 9)
    spend: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        token_id, team = ids[e.token_hash]
        hour = e.used_at.replace(minute=0, second=0, microsecond=0)
        status_class = e.response_status // 100 if e.response_status else 0
        row = hourly[(hour, e.token_hash, e.route_path or "", status_class)]
        is_llm = e.usage_source is not None
        row[0] += (e.prompt_tokens or 0) if is_llm else 0
        row[1] += (e.completion_tokens or 0) if is_llm else 0
        row[2] += e.cost_pusd or 0
        row[3] += is_llm
        row[4] += is_llm and e.cost_pusd is None
        row[5] += e.usage_source == "estimated"
        row[6] += e.usage_source == "missing"
        if is_llm:
            cost = costs[(hour, token_id, team, e.route_path or "", e.model or "")]
            values = [
                1, e.prompt_tokens or 0, e.completion_tokens or 0, e.cached_prompt_tokens or 0,
                e.reasoning_tokens or 0, e.cost_pusd or 0, e.cost_pusd is None,
                e.usage_source == "estimated", e.usage_source == "missing",
            ]  # fmt: skip
            costs[(hour, token_id, team, e.route_path or "", e.model or "")] = [
                a + int(b) for a, b in zip(cost, values, strict=True)
            ]
        if e.cost_pusd is not None:
            for period in ("day", "month"):
                for key in (("token", str(token_id)), ("team", team)):
                    entry = spend[(*key, period, local_start(e.used_at, period))]
                    entry[0] += e.cost_pusd
                    entry[1] += 1
    return {"hourly": dict(hourly), "costs": dict(costs), "spend": dict(spend)}


async def stored(services: Services) -> dict[str, Any]:
    async with services.database.read() as connection:
        hourly = {
            (r.hour, r.token_hash, r.route_path, r.status_class): [
                r.prompt_tokens,
                r.completion_tokens,
                r.cost_pusd,
                r.llm_calls,
                r.unpriced_calls,
                r.estimated_calls,
                r.missing_calls,
            ]
            for r in await connection.execute(usage_hourly.select())
        }
        costs = {
            (r.hour, r.token_id, r.team_id, r.route_path, r.model): [
                r.calls,
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_prompt_tokens,
                r.reasoning_tokens,
                r.cost_pusd,
                r.unpriced_calls,
                r.estimated_calls,
                r.missing_calls,
            ]
            for r in await connection.execute(usage_cost_hourly.select())
        }
        spend = {
            (r.scope, r.subject, r.period, r.period_start): [r.cost_pusd, r.calls]
            for r in await connection.execute(usage_spend.select())
        }
        daily_cost = (
            await connection.execute(sa.select(sa.func.sum(usage_daily.c.cost_pusd)))
        ).scalar()
    return {"hourly": hourly, "costs": costs, "spend": spend, "daily_cost": daily_cost}


async def insert(services: Services, events: list[UsageEvent]) -> int:
    async with services.database.write() as connection:
        return await usage_sql.insert_usage_events(connection, events, zone=KOLKATA)


def copies(events: list[UsageEvent]) -> list[UsageEvent]:
    return [UsageEvent.from_json(e.to_json() | {"token_id": None, "team_id": None}) for e in events]


async def test_llm_sums_cost_rollup_and_spend_equal_the_oracle_and_replays_add_nothing(
    services: Services, tokens_of_two_teams: list[IssuedToken]
) -> None:
    events = make_llm_events(tokens_of_two_teams, 1500)
    ids = {hash_token(t.token_secret): (t.token.id, t.token.team_id) for t in tokens_of_two_teams}
    assert await insert(services, copies(events[:900])) == 900
    assert await insert(services, copies(events)) == 600  # overlaps the first batch
    expected = oracle(events, ids)
    after = await stored(services)
    assert {k: v for k, v in after["hourly"].items()} == expected["hourly"]
    assert after["costs"] == expected["costs"]
    assert after["spend"] == expected["spend"]
    assert after["daily_cost"] == sum(e.cost_pusd or 0 for e in events)
    # Both local days and both local months around 18:30 UTC on March 31 are there.
    starts = {key[3] for key in after["spend"]}
    assert datetime(2030, 3, 31, 18, 30, tzinfo=UTC) in starts
    assert datetime(2030, 2, 28, 18, 30, tzinfo=UTC) in starts

    assert await insert(services, copies(events)) == 0
    assert await stored(services) == after

    async with services.database.read() as connection:
        rows = {r.event_id: r for r in await connection.execute(token_usage_logs.select())}
    for event in events:
        row = rows[event.event_id]
        assert (row.model, row.prompt_tokens, row.completion_tokens, row.cached_prompt_tokens,
                row.reasoning_tokens, row.usage_source, row.cost_pusd) == (
            event.model, event.prompt_tokens, event.completion_tokens,
            event.cached_prompt_tokens, event.reasoning_tokens, event.usage_source,
            event.cost_pusd,
        )  # fmt: skip
        assert row.team_id == ids[event.token_hash][1]


async def test_rebuilding_a_day_restores_the_llm_sums_and_cost_rollup(
    services: Services, tokens_of_two_teams: list[IssuedToken]
) -> None:
    events = make_llm_events(tokens_of_two_teams, 400, seed=7)
    await insert(services, events)
    before = await stored(services)
    async with services.database.write() as connection:
        await connection.execute(usage_cost_hourly.delete())
        await connection.execute(usage_hourly.update().values(cost_pusd=0, prompt_tokens=0))
        await connection.execute(usage_daily.update().values(cost_pusd=0, llm_calls=0))
    for day in (datetime(2030, 3, 31, tzinfo=UTC), datetime(2030, 4, 1, tzinfo=UTC)):
        async with services.database.write() as connection:
            await maintenance.rebuild_rollup_day(connection, day)
    assert await stored(services) == before


async def test_retention_removes_old_cost_and_spend_rows(
    services: Services, tokens_of_two_teams: list[IssuedToken]
) -> None:
    await insert(services, make_llm_events(tokens_of_two_teams, 200, seed=3))
    await maintenance.delete_rollups_before(services.database, datetime(2030, 4, 2, tzinfo=UTC))
    after = await stored(services)
    assert after["costs"] == {}
    assert after["spend"] == {}


def test_a_spool_line_written_before_the_llm_fields_loads_with_them_none() -> None:
    line = (
        '{"token_hash": "' + "a" * 64 + '", "route_path": "/v1", "used_at": '
        '"2030-03-01T10:00:00+00:00", "response_status": 200, "response_time_ms": 5, '
        '"event_id": "01900000-0000-7000-8000-000000000000", "token_id": 3, "ttfb_ms": null, '
        '"ip_address": null, "user_agent": null, "request_method": "GET", '
        '"error_message": null, "bytes_in": null, "bytes_out": null, "failure_kind": null, '
        '"source": "gateway"}'
    )
    event = UsageEvent.from_json(json.loads(line))
    assert event.token_id == 3
    assert (event.team_id, event.model, event.prompt_tokens, event.usage_source) == (None,) * 4
    assert event.cost_pusd is None
    assert not event.is_llm_call


async def test_concurrent_llm_batches_add_up_without_deadlock(
    services: Services, tokens_of_two_teams: list[IssuedToken]
) -> None:
    """Batches written at once meet the same rollup, cost and spend rows in other orders: their
    locks are taken in key order, so they wait for each other and add up exactly."""
    batches = []
    for seed in range(8):
        batch = make_llm_events(tokens_of_two_teams, 150, seed=100 + seed)
        random.Random(seed).shuffle(batch)
        batches.append(batch)
    written = await asyncio.gather(*(insert(services, copies(batch)) for batch in batches))
    everything = [event for batch in batches for event in batch]
    assert sum(written) == len(everything)
    ids = {hash_token(t.token_secret): (t.token.id, t.token.team_id) for t in tokens_of_two_teams}
    after = await stored(services)
    assert {k: v for k, v in after.items() if k != "daily_cost"} == oracle(everything, ids)
