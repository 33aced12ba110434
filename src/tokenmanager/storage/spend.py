"""SQL for spend and a token's own usage: the spend per budget period the gateway checks
budgets against and the budget detector judges, and the summary a token holder reads with the
token itself. All read precomputed rows (usage_spend, the hourly rollup), never a month of raw
rows."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.calendar import local_day_starts
from tokenmanager.clock import utcnow
from tokenmanager.security.detectors import BudgetedSubject
from tokenmanager.storage.maintenance import event_of
from tokenmanager.storage.schema import teams, token_usage_logs, tokens, usage_hourly, usage_spend
from tokenmanager.usage.costs import SpendKey, TokenUsageSummary, UsageSums
from tokenmanager.usage.rollup import hour_of

HOUR = timedelta(hours=1)


async def read_spend(connection: AsyncConnection, keys: Sequence[SpendKey]) -> dict[SpendKey, int]:
    """Spend in pico-dollars of each (scope, subject, period, period_start) key: 0 for a
    period without a costed call (nothing spent is known, not unknown)."""
    spent: dict[SpendKey, int] = dict.fromkeys(keys, 0)
    if not keys:
        return spent
    table = usage_spend
    query = sa.select(
        table.c.scope, table.c.subject, table.c.period, table.c.period_start, table.c.cost_pusd
    ).where(
        sa.or_(
            *(
                sa.and_(
                    table.c.scope == scope,
                    table.c.subject == subject,
                    table.c.period == period,
                    table.c.period_start == start,
                )
                for scope, subject, period, start in keys
            )
        )
    )
    for row in await connection.execute(query):
        spent[(row.scope, row.subject, row.period, row.period_start)] = int(row.cost_pusd)
    return spent


async def _sums_between(
    connection: AsyncConnection, token_id: int, boundaries: list[datetime], until: datetime
) -> list[UsageSums]:
    """The token's sums in [b0, b1), [b1, b2), … [bn, until): from the hourly rollup for the
    hours wholly inside one span, from the raw rows for the hours a boundary cuts (a +05:30
    day starts at :30)."""
    sums = [UsageSums() for _ in boundaries]
    if not boundaries:
        return sums
    first_hour = hour_of(boundaries[0])

    def span_of(moment: datetime) -> int:
        return bisect.bisect_right(boundaries, moment) - 1

    cut_hours: set[datetime] = set()
    table = usage_hourly
    rows = await connection.execute(
        sa.select(
            table.c.hour, table.c.calls, table.c.errors, table.c.prompt_tokens,
            table.c.completion_tokens, table.c.cost_pusd, table.c.llm_calls,
            table.c.unpriced_calls,
        ).where(table.c.token_id == token_id, table.c.hour >= first_hour, table.c.hour < until)
    )  # fmt: skip
    for row in rows:
        start = row.hour
        index = span_of(start)
        end_index = span_of(min(start + HOUR, until) - timedelta(microseconds=1))
        if index != end_index or index < 0:
            cut_hours.add(start)
            continue
        target = sums[index]
        target.calls += row.calls
        target.errors += row.errors
        target.prompt_tokens += row.prompt_tokens
        target.completion_tokens += row.completion_tokens
        target.cost_pusd += row.cost_pusd
        target.llm_calls += row.llm_calls
        target.unpriced_calls += row.unpriced_calls
    for hour in sorted(cut_hours):
        raw = await connection.execute(
            token_usage_logs.select().where(
                token_usage_logs.c.token_id == token_id,
                token_usage_logs.c.used_at >= hour,
                token_usage_logs.c.used_at < hour + HOUR,
            )
        )
        for row in raw:
            index = span_of(row.used_at)
            if index >= 0 and row.used_at < until:
                sums[index].add_event(event_of(row))
    return sums


async def read_token_usage_summary(
    connection: AsyncConnection,
    token_id: int,
    period_start: datetime,
    days_start: datetime,
    zone: ZoneInfo,
    *,
    until: datetime | None = None,
) -> TokenUsageSummary:
    """The token's calls, errors, tokens and cost since `period_start` (its budget period's
    start), and per local day of `zone` from the day holding `days_start` until `until`
    (default: now). A boundary inside an hour reads that hour's raw rows: once retention has
    deleted them, their calls are missing from the figure."""
    end = until or utcnow()
    [period] = await _sums_between(connection, token_id, [period_start], end)
    starts = local_day_starts(days_start, end, zone)
    days = await _sums_between(connection, token_id, starts, end)
    return TokenUsageSummary(period=period, days=list(zip(starts, days, strict=True)))


async def read_token_names(connection: AsyncConnection, token_id: int) -> tuple[str, str]:
    """(token name, team name) of an existing token."""
    query = (
        sa.select(tokens.c.name, teams.c.name.label("team_name"))
        .join(teams, teams.c.id == tokens.c.team_id)
        .where(tokens.c.id == token_id)
    )
    row = (await connection.execute(query)).one()
    return row.name, row.team_name


async def read_budgeted_subjects(connection: AsyncConnection) -> list[BudgetedSubject]:
    """Every team with a budget, and every token with one that is not revoked."""
    token_rows = await connection.execute(
        sa.select(
            tokens.c.id,
            tokens.c.name,
            tokens.c.team_id,
            tokens.c.budget_micro_usd,
            tokens.c.budget_period,
        ).where(tokens.c.budget_micro_usd.is_not(None), tokens.c.revoked_at.is_(None))
    )
    team_rows = await connection.execute(
        sa.select(teams.c.id, teams.c.name, teams.c.budget_micro_usd, teams.c.budget_period).where(
            teams.c.budget_micro_usd.is_not(None)
        )
    )
    return [
        *(
            BudgetedSubject(
                scope="token",
                subject=str(row.id),
                name=row.name,
                team_id=row.team_id,
                token_id=row.id,
                budget_micro_usd=row.budget_micro_usd,
                period=row.budget_period or "month",
            )
            for row in token_rows
        ),
        *(
            BudgetedSubject(
                scope="team",
                subject=row.id,
                name=row.name,
                team_id=row.id,
                token_id=None,
                budget_micro_usd=row.budget_micro_usd,
                period=row.budget_period or "month",
            )
            for row in team_rows
        ),
    ]


async def read_period_spend(
    connection: AsyncConnection, period_starts: Mapping[str, datetime]
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(scope, subject, period) -> (cost in pUSD, calls) for the periods starting at
    `period_starts` ({"day": start, "month": start})."""
    if not period_starts:
        return {}
    query = sa.select(
        usage_spend.c.scope,
        usage_spend.c.subject,
        usage_spend.c.period,
        usage_spend.c.cost_pusd,
        usage_spend.c.calls,
    ).where(
        sa.or_(
            *(
                sa.and_(usage_spend.c.period == period, usage_spend.c.period_start == start)
                for period, start in period_starts.items()
            )
        )
    )
    return {
        (row.scope, row.subject, row.period): (int(row.cost_pusd), int(row.calls))
        for row in await connection.execute(query)
    }
