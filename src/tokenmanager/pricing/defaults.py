"""The shipped default price table: list prices in USD per million tokens (input, output,
cached input) for common OpenAI and Anthropic models. An admin's price for a model overrides
its default; deleting a model's price removes the default too. Check the vendors' pages before
relying on these: prices change, and the table says when it was taken.
"""

from __future__ import annotations

from decimal import Decimal

from tokenmanager.pricing.models import Price
from tokenmanager.pricing.money import usd_to_micro

DEFAULT_PRICES_AS_OF = "2025-10-01"  # claude-sonnet-4-5 (2025-09-29) is in it
_OPENAI_SOURCE = f"default: OpenAI list price as of {DEFAULT_PRICES_AS_OF}"
_ANTHROPIC_SOURCE = f"default: Anthropic list price as of {DEFAULT_PRICES_AS_OF}"

# model: (input, output, cached input or None)
_OPENAI: dict[str, tuple[str, str, str | None]] = {
    "gpt-5": ("1.25", "10", "0.125"),
    "gpt-5-mini": ("0.25", "2", "0.025"),
    "gpt-5-nano": ("0.05", "0.4", "0.005"),
    "gpt-4.1": ("2", "8", "0.5"),
    "gpt-4.1-mini": ("0.4", "1.6", "0.1"),
    "gpt-4.1-nano": ("0.1", "0.4", "0.025"),
    "gpt-4o": ("2.5", "10", "1.25"),
    "gpt-4o-2024-05-13": ("5", "15", None),
    "gpt-4o-mini": ("0.15", "0.6", "0.075"),
    "o1": ("15", "60", "7.5"),
    "o3": ("2", "8", "0.5"),
    "o3-mini": ("1.1", "4.4", "0.55"),
    "o4-mini": ("1.1", "4.4", "0.275"),
    "gpt-3.5-turbo": ("0.5", "1.5", None),
    "text-embedding-3-small": ("0.02", "0", None),
    "text-embedding-3-large": ("0.13", "0", None),
    "text-embedding-ada-002": ("0.1", "0", None),
}
# Anthropic's cache reads are 0.1x the input price. Cache writes (1.25x input) are charged
# here at the input price: their count is folded into prompt_tokens (see docs/costs.md).
_ANTHROPIC: dict[str, tuple[str, str, str | None]] = {
    "claude-opus-4-1": ("15", "75", "1.5"),
    "claude-opus-4": ("15", "75", "1.5"),
    "claude-sonnet-4-5": ("3", "15", "0.3"),
    "claude-sonnet-4": ("3", "15", "0.3"),
    "claude-3-7-sonnet": ("3", "15", "0.3"),
    "claude-3-5-sonnet": ("3", "15", "0.3"),
    "claude-3-5-haiku": ("0.8", "4", "0.08"),
    "claude-3-haiku": ("0.25", "1.25", "0.03"),
}


def _price(model: str, rates: tuple[str, str, str | None], source: str) -> Price:
    input_usd, output_usd, cached_usd = rates
    return Price(
        model=model,
        input_micro_usd_per_mtok=usd_to_micro(Decimal(input_usd)),
        output_micro_usd_per_mtok=usd_to_micro(Decimal(output_usd)),
        cached_input_micro_usd_per_mtok=(
            usd_to_micro(Decimal(cached_usd)) if cached_usd is not None else None
        ),
        effective_from=None,
        source=source,
    )


DEFAULT_PRICES: tuple[Price, ...] = (
    *(_price(model, rates, _OPENAI_SOURCE) for model, rates in _OPENAI.items()),
    *(_price(model, rates, _ANTHROPIC_SOURCE) for model, rates in _ANTHROPIC.items()),
)
