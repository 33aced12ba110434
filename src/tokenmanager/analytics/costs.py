"""Shaping cost figures for `/api/usage/costs`: one entry per model, team, token or route, most
expensive first, and the window's totals. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenmanager.analytics.figures import cost_usd

GROUP_BY = ("model", "team", "token", "route")
UNKNOWN_TOKEN_NAME = "unknown token"  # noqa: S105 - a label, not a secret
COST_MEASURES = (
    "calls", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens",
    "cost_pusd", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip


@dataclass(slots=True)
class CostFigures:
    """Sums over LLM calls: known tokens and costs, and how many calls had no price, estimated
    or missing counts."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    cost_pusd: int = 0
    unpriced_calls: int = 0
    estimated_calls: int = 0
    missing_calls: int = 0

    def add(self, other: CostFigures) -> None:
        for name in COST_MEASURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def cost_view(figures: CostFigures) -> dict[str, Any]:
    return {
        "calls": figures.calls,
        "prompt_tokens": figures.prompt_tokens,
        "completion_tokens": figures.completion_tokens,
        "cached_prompt_tokens": figures.cached_prompt_tokens,
        "reasoning_tokens": figures.reasoning_tokens,
        "cost_usd": cost_usd(figures.cost_pusd, figures.calls, figures.unpriced_calls),
        "unpriced_calls": figures.unpriced_calls,
        "estimated_calls": figures.estimated_calls,
        "missing_calls": figures.missing_calls,
    }


def _key_view(group_by: str, key: Any, names: Mapping[int, tuple[str, str]]) -> dict[str, Any]:
    if group_by == "model":
        return {"model": key or None}
    if group_by == "team":
        return {"team_id": key or None}
    if group_by == "route":
        return {"route_path": key or None}
    name, team_id = (
        names.get(key, (UNKNOWN_TOKEN_NAME, None)) if key else (UNKNOWN_TOKEN_NAME, None)
    )
    return {"token_id": key or None, "name": name, "team_id": team_id}


def build_cost_rows(
    group_by: str, grouped: list[tuple[Any, CostFigures]], names: Mapping[int, tuple[str, str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows most expensive first — ties by calls, then key — and the totals)."""
    ordered = sorted(
        grouped, key=lambda entry: (-entry[1].cost_pusd, -entry[1].calls, str(entry[0]))
    )
    total = CostFigures()
    rows = []
    for key, figures in ordered:
        total.add(figures)
        rows.append(_key_view(group_by, key, names) | cost_view(figures))
    return rows, cost_view(total)
