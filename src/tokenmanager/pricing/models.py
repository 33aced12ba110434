"""Model prices and the cost of one call.

A price applies to a model by exact name, or to its dated snapshots ("gpt-4o-2024-08-06",
"claude-sonnet-4-20250514"): an upstream usually answers with the snapshot it served. Any other
suffix ("gpt-4o-audio-preview") is another model, priced on its own or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from tokenmanager.llm.models import LlmUsage

# "-2024-08-06" (OpenAI), "-20250514" (Anthropic), "-latest": the same model, another release.
_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    input_micro_usd_per_mtok: int
    output_micro_usd_per_mtok: int
    cached_input_micro_usd_per_mtok: int | None  # None: cached input costs the input price
    effective_from: datetime | None  # None for a shipped default
    source: str  # "admin", or the default table's date and origin


def match_price(model: str | None, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`: its own, else its base model's when `model` is a dated snapshot."""
    if not model:
        return None
    price = prices.get(model)
    if price is not None:
        return price
    base = _SNAPSHOT_SUFFIX.sub("", model)
    return prices.get(base) if base != model else None


def compute_cost_pusd(price: Price | None, usage: LlmUsage) -> int | None:
    """The exact cost in pico-dollars, or None when the price or a count is unknown.

    tokens x micro-dollars per million tokens = pico-dollars: no division, nothing rounds.
    """
    if price is None or usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    cached = min(usage.cached_prompt_tokens or 0, usage.prompt_tokens)
    cached_rate = price.cached_input_micro_usd_per_mtok
    if cached_rate is None:
        cached_rate = price.input_micro_usd_per_mtok
    return (
        (usage.prompt_tokens - cached) * price.input_micro_usd_per_mtok
        + cached * cached_rate
        + usage.completion_tokens * price.output_micro_usd_per_mtok
    )
