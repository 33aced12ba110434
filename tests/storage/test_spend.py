"""Spend per budget period and a token's own usage summary, on both backends: equal to plain
sums over the recorded calls by local day and month, also in a +05:30 zone whose days start in
the middle of a UTC hour."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.calendar import period_bounds
from tokenmanager.composition import Services
from tokenmanager.storage.spend import read_spend, read_token_usage_summary
from tokenmanager.storage.usage import insert_usage_events
from tokenmanager.tokens.codec import hash_token
from tokenmanager.usage.events import UsageEvent

NOW = datetime(2030, 4, 2, 12, 0, tzinfo=UTC)


def local_date(moment: datetime, zone: ZoneInfo) -> tuple[int, int, int]:
    local = moment.astimezone(zone)
    return (local.year, local.month, local.day)


# Paris moves its clocks on 2030-03-31: a 23-hour local day inside the ten days.
@pytest.mark.parametrize("zone_name", ["Asia/Kolkata", "UTC", "Europe/Paris"])
async def test_summary_and_spend_equal_plain_sums_by_local_day_and_month(
    services: Services, admin: Actor, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    await services.teams.create(admin, team_id="ops", name="Ops")
    issued = await services.tokens.issue(admin, name="bot", team_id="ops")
    other = await services.tokens.issue(admin, name="other", team_id="ops")
    rng = random.Random(5)
    events = []
    for number in range(600):
        token = issued if number % 5 else other
        is_llm = rng.random() < 0.7
        cost = rng.choice([None, rng.randrange(10**9)]) if is_llm else None
        events.append(
            UsageEvent(
                token_hash=hash_token(token.token_secret),
                token_id=token.token.id,
                team_id="ops",
                route_path="/llm",
                used_at=NOW - timedelta(seconds=rng.randrange(12 * 86400)),
                response_status=rng.choice([200, 200, 500]),
                response_time_ms=10,
                model="gpt-4o" if is_llm else None,
                prompt_tokens=rng.randrange(100) if is_llm else None,
                completion_tokens=rng.randrange(100) if is_llm else None,
                usage_source="reported" if is_llm else None,
                cost_pusd=cost,
            )
        )
    async with services.database.write() as connection:
        await insert_usage_events(connection, events, zone=zone)

    month_start, _ = period_bounds("month", NOW, zone)
    days_start = NOW - timedelta(days=9)
    async with services.database.read() as connection:
        summary = await read_token_usage_summary(
            connection, issued.token.id, month_start, days_start, zone, until=NOW
        )
    own = [e for e in events if e.token_id == issued.token.id]

    def sums(chosen: list[UsageEvent]) -> tuple[int, ...]:
        llm = [e for e in chosen if e.usage_source]
        return (
            len(chosen),
            sum(e.response_status == 500 for e in chosen),
            sum(e.prompt_tokens or 0 for e in llm),
            sum(e.completion_tokens or 0 for e in llm),
            sum(e.cost_pusd or 0 for e in chosen),
            len(llm),
            sum(e.cost_pusd is None for e in llm),
        )

    def as_tuple(s: object) -> tuple[int, ...]:
        names = ("calls", "errors", "prompt_tokens", "completion_tokens", "cost_pusd")
        return tuple(getattr(s, n) for n in (*names, "llm_calls", "unpriced_calls"))

    assert as_tuple(summary.period) == sums([e for e in own if e.used_at >= month_start])
    dates = [local_date(start, zone) for start, _ in summary.days]
    assert dates[0] == local_date(days_start, zone)
    assert dates[-1] == local_date(NOW, zone)
    assert len(dates) == len(set(dates)) == 10
    for start, day in summary.days:
        assert start.astimezone(zone).hour == 0
        chosen = [e for e in own if local_date(e.used_at, zone) == local_date(start, zone)]
        assert as_tuple(day) == sums(chosen), start

    day_start, _ = period_bounds("day", NOW, zone)
    keys = [
        ("token", str(issued.token.id), "day", day_start),
        ("token", str(issued.token.id), "month", month_start),
        ("team", "ops", "month", month_start),
        ("team", "nobody", "month", month_start),
    ]
    async with services.database.read() as connection:
        spent = await read_spend(connection, keys)
    assert spent == {
        keys[0]: sum(e.cost_pusd or 0 for e in own if e.used_at >= day_start),
        keys[1]: sum(e.cost_pusd or 0 for e in own if e.used_at >= month_start),
        keys[2]: sum(e.cost_pusd or 0 for e in events if e.used_at >= month_start),
        keys[3]: 0,
    }
    assert spent[keys[0]] > 0
