"""SQL over spend and a token's own usage: what the gateway's budget checks and its
self-service endpoint read. Never per proxied call: budgets are polled, self-service is asked."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.storage.schema import teams, tokens, usage_hourly, usage_spend
from tokenmanager.usage.costs import SpendKey


async def read_spend(connection: AsyncConnection, keys: Sequence[SpendKey]) -> dict[SpendKey, int]:
    """The spend in pico-dollars of each key that has any (absent keys have spent nothing)."""
    if not keys:
        return {}
    wanted = sa.tuple_(
        usage_spend.c.scope, usage_spend.c.subject, usage_spend.c.period, usage_spend.c.period_start
    ).in_([tuple(key) for key in keys])
    query = sa.select(
        usage_spend.c.scope,
        usage_spend.c.subject,
        usage_spend.c.period,
        usage_spend.c.period_start,
        usage_spend.c.cost_pusd,
    ).where(wanted)
    return {
        (row.scope, row.subject, row.period, row.period_start): int(row.cost_pusd)
        for row in await connection.execute(query)
    }


@dataclass(slots=True)
class UsageFigures:
    """Calls and LLM usage over some hours. `cost_pusd` is None when every LLM call in them
    had no price (unknown, not free); `unpriced_calls` says how many were left out of it."""

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    priced_cost_pusd: int = 0
    llm_calls: int = 0
    unpriced_calls: int = 0

    @property
    def cost_pusd(self) -> int | None:
        if self.llm_calls and self.unpriced_calls == self.llm_calls:
            return None
        return self.priced_cost_pusd

    def add(self, row: Any) -> None:
        self.calls += int(row.calls)
        self.errors += int(row.errors)
        self.prompt_tokens += int(row.prompt_tokens)
        self.completion_tokens += int(row.completion_tokens)
        self.priced_cost_pusd += int(row.cost_pusd)
        self.llm_calls += int(row.llm_calls)
        self.unpriced_calls += int(row.unpriced_calls)


@dataclass(slots=True)
class DayFigures(UsageFigures):
    date: date = field(default=date.min)


@dataclass(slots=True)
class TokenUsageSummary:
    token_name: str
    team_name: str
    period: UsageFigures
    days: list[DayFigures]


async def read_token_usage_summary(
    connection: AsyncConnection,
    token_id: int,
    *,
    period_start: datetime,
    period_end: datetime,
    days_start: datetime,
    zone: ZoneInfo,
) -> TokenUsageSummary:
    """One token's figures for [period_start, period_end) and per local day since
    `days_start`, from the hourly rollup. An hour counts in the period (and local day) its
    start falls in: exact in whole-hour zones; in half-hour zones (+05:30) the half hour at each
    local midnight counts on the side where its hour began."""
    names = (
        await connection.execute(
            sa.select(tokens.c.name, teams.c.name.label("team_name"))
            .join(teams, teams.c.id == tokens.c.team_id)
            .where(tokens.c.id == token_id)
        )
    ).one()
    start = min(period_start, days_start)
    query = (
        sa.select(
            usage_hourly.c.hour,
            *(
                sa.func.sum(usage_hourly.c[column]).label(column)
                for column in (
                    "calls",
                    "errors",
                    "prompt_tokens",
                    "completion_tokens",
                    "cost_pusd",
                    "llm_calls",
                    "unpriced_calls",
                )
            ),
        )
        .where(usage_hourly.c.token_id == token_id, usage_hourly.c.hour >= _hour_floor(start))
        .group_by(usage_hourly.c.hour)
    )
    period = UsageFigures()
    by_day: dict[date, DayFigures] = defaultdict(DayFigures)
    for row in await connection.execute(query):
        if _hour_floor(period_start) <= row.hour < period_end:
            period.add(row)
        if row.hour >= _hour_floor(days_start):
            by_day[row.hour.astimezone(zone).date()].add(row)
    first_day = days_start.astimezone(zone).date()
    last_day = max([first_day, *by_day])
    days = []
    for ordinal in range(first_day.toordinal(), last_day.toordinal() + 1):
        day = date.fromordinal(ordinal)
        figures = by_day.get(day, DayFigures())
        figures.date = day
        days.append(figures)
    return TokenUsageSummary(names.name, names.team_name, period, days)


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
