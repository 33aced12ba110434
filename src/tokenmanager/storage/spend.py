"""SQL the budget detector reads: the tokens and teams with a budget, and what each spent in
the current day or month (`usage_spend`, kept by the usage recorder in the same transaction as
each usage batch)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenmanager.security.detectors import BudgetedSubject
from tokenmanager.storage.schema import teams, tokens
from tokenmanager.storage.types import UTCDateTime

# usage_spend is created by migration 0007 (the usage side). Declared here on its own MetaData
# until that is merged; then this points at storage.schema's table.
_spend_metadata = sa.MetaData()
usage_spend = sa.Table(
    "usage_spend",
    _spend_metadata,
    sa.Column("scope", sa.String(8), primary_key=True),  # "token" | "team"
    sa.Column("subject", sa.String(64), primary_key=True),  # token id as text, or team id
    sa.Column("period", sa.String(8), primary_key=True),  # "day" | "month"
    sa.Column("period_start", UTCDateTime, primary_key=True),
    sa.Column("cost_pusd", sa.BigInteger, nullable=False),
    sa.Column("calls", sa.BigInteger, nullable=False),
)


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
