"""The budget options that `token` and `team` commands share, and their JSON view."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from tokenmanager.budgets.models import BudgetPeriod
from tokenmanager.cli.output import EXIT_INVALID, fail
from tokenmanager.pricing.money import format_micro_usd

BudgetUsdOption = Annotated[
    str | None,
    typer.Option(
        "--budget-usd",
        help="Spending budget in USD per --budget-period (at most 6 decimals), e.g. 50.",
    ),
]
BudgetPeriodOption = Annotated[
    BudgetPeriod | None,
    typer.Option(
        "--budget-period",
        help="day or month (calendar periods); month when only --budget-usd is given.",
    ),
]
NoBudgetOption = Annotated[bool, typer.Option("--no-budget", help="Remove the budget.")]


def budget_changes(
    budget_usd: str | None, budget_period: BudgetPeriod | None, no_budget: bool
) -> dict[str, Any]:
    """The `budget_usd` / `budget_period` changes the options ask for (none when left out)."""
    if no_budget:
        if budget_usd is not None or budget_period is not None:
            fail(
                "--no-budget cannot be combined with --budget-usd or --budget-period",
                EXIT_INVALID,
            )
        return {"budget_usd": None}
    changes: dict[str, Any] = {}
    if budget_usd is not None:
        changes["budget_usd"] = budget_usd
    if budget_period is not None:
        changes["budget_period"] = budget_period
    return changes


def budget_json(record: Any) -> dict[str, Any]:
    """A token's or team's fields for --json, the budget as the API shows it."""
    view = asdict(record)
    micro_usd = view.pop("budget_micro_usd", None)
    view["budget_usd"] = format_micro_usd(micro_usd) if micro_usd is not None else None
    return view
