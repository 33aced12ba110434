"""`GET /_tokenmanager/usage`: a token holder reads its own usage with the token itself.

Not on the proxy's hot path: one store read per call of this endpoint. Only the presenting
token's own figures are ever read; refused tokens get the gateway's usual 401 (app.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tokenmanager.gateway.budgets import Budget, BudgetGuard
from tokenmanager.gateway.verification import TokenRecord
from tokenmanager.pricing.money import format_micro_usd, format_usd, micro_to_pusd
from tokenmanager.storage import spend as summary_sql
from tokenmanager.storage.database import Database

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
            summary = await summary_sql.read_token_usage_summary(
                connection,
                record.token_id,
                period_start=period_start,
                period_end=period_end,
                days_start=history_start,
                zone=clock.zone,
            )
        spent = await self._budgets.ledger.spent_pusd(
            [(b.scope, b.subject, b.period, clock.bounds(b.period, now)[0]) for b in record.budgets]
        )
        spent_by_scope = {
            budget.scope: value for budget, value in zip(record.budgets, spent, strict=True)
        }
        return {
            "token": {"id": record.token_id, "name": summary.token_name},
            "team": {"id": record.team_id, "name": summary.team_name},
            "period": {
                "kind": period,
                "start": period_start.astimezone(clock.zone).isoformat(),
                "end": period_end.astimezone(clock.zone).isoformat(),
                "timezone": clock.zone.key,
            },
            "calls": summary.period.calls,
            "errors": summary.period.errors,
            "prompt_tokens": summary.period.prompt_tokens,
            "completion_tokens": summary.period.completion_tokens,
            "cost_usd": _usd(summary.period.cost_pusd),
            "unpriced_calls": summary.period.unpriced_calls,
            **_budget_fields("budget", own, spent_by_scope.get("token")),
            **_budget_fields("team_budget", team, spent_by_scope.get("team")),
            "days": [
                {
                    "date": day.date.isoformat(),
                    "calls": day.calls,
                    "errors": day.errors,
                    "prompt_tokens": day.prompt_tokens,
                    "completion_tokens": day.completion_tokens,
                    "cost_usd": _usd(day.cost_pusd),
                }
                for day in summary.days
            ],
        }


def _usd(pusd: int | None) -> str | None:
    return None if pusd is None else format_usd(pusd)


def _budget_fields(prefix: str, budget: Budget | None, spent_pusd: int | None) -> dict[str, Any]:
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
