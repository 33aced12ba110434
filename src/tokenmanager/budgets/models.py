"""A budget is an amount of integer micro-dollars per calendar period ("day" or "month"). The
rules for setting one: an amount with at most 6 decimals, never negative; the period defaults
to "month" when only an amount is given; a period without an amount is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tokenmanager.errors import InvalidInputError
from tokenmanager.pricing.money import parse_usd, usd_to_micro

UsdInput = str | int | float | Decimal


class BudgetPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"


DEFAULT_PERIOD = BudgetPeriod.MONTH


@dataclass(frozen=True, slots=True)
class Budget:
    micro_usd: int
    period: BudgetPeriod

    @classmethod
    def of_columns(cls, micro_usd: int | None, period: str | None) -> Budget | None:
        """From the stored `budget_micro_usd` / `budget_period` (None when no budget)."""
        if micro_usd is None:
            return None
        return cls(micro_usd, BudgetPeriod(period or DEFAULT_PERIOD))


def budget_columns(budget: Budget | None) -> dict[str, Any]:
    """The stored columns of a budget (both NULL for none)."""
    return {
        "budget_micro_usd": budget.micro_usd if budget else None,
        "budget_period": budget.period.value if budget else None,
    }


def _period(raw: str | BudgetPeriod) -> BudgetPeriod:
    try:
        return BudgetPeriod(raw)
    except ValueError:
        raise InvalidInputError("budget_period", 'must be "day" or "month"') from None


def _micro_usd(raw: UsdInput) -> int:
    try:
        return usd_to_micro(parse_usd(raw))
    except ValueError as exc:
        raise InvalidInputError("budget_usd", str(exc)) from None


def build_budget(
    budget_usd: UsdInput | None, budget_period: str | BudgetPeriod | None
) -> Budget | None:
    """A new object's budget: None without an amount; "month" when the period is left out."""
    if budget_usd is None:
        if budget_period is not None:
            raise InvalidInputError("budget_period", "needs budget_usd")
        return None
    return Budget(_micro_usd(budget_usd), _period(budget_period or DEFAULT_PERIOD))


def change_budget(current: Budget | None, changes: Mapping[str, Any]) -> Budget | None:
    """The budget after a partial change of `budget_usd` and/or `budget_period` (keys present
    are changed). `budget_usd: None` removes the budget; an amount alone keeps the current
    period (or "month"); a period alone changes the period of the current budget."""
    if "budget_usd" in changes:
        amount = changes["budget_usd"]
        period = changes.get("budget_period")
        if amount is None:
            if period is not None:
                raise InvalidInputError("budget_period", "needs budget_usd")
            return None
        return Budget(
            _micro_usd(amount),
            _period(period)
            if period is not None
            else (current.period if current else DEFAULT_PERIOD),
        )
    if "budget_period" in changes:
        period = changes["budget_period"]
        if current is None:
            if period is None:
                return None
            raise InvalidInputError("budget_period", "needs budget_usd: there is no budget")
        if period is None:
            raise InvalidInputError(
                "budget_period", "is required with a budget; remove it with budget_usd null"
            )
        return Budget(current.micro_usd, _period(period))
    return current
