"""`GET /_tokenmanager/usage`: a token holder reads its own usage with the token itself.

Not on the proxy's hot path: one store read per call of this endpoint. Only the presenting
token's own figures are ever read; refused tokens get the gateway's usual 401 (app.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tokenmanager.analytics.figures import cost_usd
from tokenmanager.gateway.budgets import BudgetGuard, GuardedBudget
from tokenmanager.gateway.verification import TokenRecord
from tokenmanager.pricing.money import format_micro_usd, format_usd, micro_to_pusd
from tokenmanager.storage import spend as summary_sql
from tokenmanager.storage.database import Database
from tokenmanager.usage.costs import UsageSums

HISTORY_DAYS = 30


class SelfService:
    def __init__(self, database: Database, budgets: BudgetGuard) -> None:
        self._db = database
        self._budgets = budgets

    async def read(self, record: TokenRecord, now: datetime) -> dict[str, Any]:
        clock = self._budgets.clock
        own = next((b for b in record.budgets if b.scope == "token"), None)
        team = next((b for b in record.budgets if b.scope == "team"), None)
        guarding = own or team
        period = guarding.period if guarding is not None else "month"
        period_start, period_end = clock.bounds(period, now)
        today_start = clock.bounds("day", now)[0]
        history_start = today_start.astimezone(clock.zone) - timedelta(days=HISTORY_DAYS - 1)
        async with self._db.read() as connection:
            names = await summary_sql.read_token_names(connection, record.token_id)
            summary = await summary_sql.read_token_usage_summary(
                connection, record.token_id, period_start, history_start, clock.zone, until=now
            )
        spent = await self._budgets.ledger.spent_pusd(
            [(b.scope, b.subject, b.period, clock.bounds(b.period, now)[0]) for b in record.budgets]
        )
        spent_by_scope = {
            budget.scope: value for budget, value in zip(record.budgets, spent, strict=True)
        }
        return {
            "token": {"id": record.token_id, "name": names[0]},
            "team": {"id": record.team_id, "name": names[1]},
            "period": {
                "kind": period,
                "start": period_start.astimezone(clock.zone).isoformat(),
                "end": period_end.astimezone(clock.zone).isoformat(),
                "timezone": clock.zone.key,
            },
            **_figures(summary.period),
            "unpriced_calls": summary.period.unpriced_calls,
            **_budget_fields("budget", own, spent_by_scope.get("token")),
            **_budget_fields("team_budget", team, spent_by_scope.get("team")),
            "days": [
                {"date": start.astimezone(clock.zone).date().isoformat(), **_figures(sums)}
                for start, sums in summary.days
            ],
        }


def _figures(sums: UsageSums) -> dict[str, Any]:
    """Calls, tokens and cost (null when every LLM call had no price: unknown, not free)."""
    return {
        "calls": sums.calls,
        "errors": sums.errors,
        "prompt_tokens": sums.prompt_tokens,
        "completion_tokens": sums.completion_tokens,
        "cost_usd": cost_usd(sums.cost_pusd, sums.llm_calls, sums.unpriced_calls),
    }


def _budget_fields(
    prefix: str, budget: GuardedBudget | None, spent_pusd: int | None
) -> dict[str, Any]:
    if budget is None:
        return {f"{prefix}_usd": None, f"{prefix}_period": None, f"{prefix}_remaining_usd": None}
    remaining = None
    if spent_pusd is not None:
        remaining = format_usd(max(0, micro_to_pusd(budget.limit_micro_usd) - spent_pusd))
    return {
        f"{prefix}_usd": format_micro_usd(budget.limit_micro_usd),
        f"{prefix}_period": budget.period,
        f"{prefix}_remaining_usd": remaining,
    }
