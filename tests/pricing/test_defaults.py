"""The shipped default price table: well-formed, dated, and unambiguous."""

from __future__ import annotations

from tokenmanager.pricing.defaults import DEFAULT_PRICES, DEFAULT_PRICES_AS_OF
from tokenmanager.pricing.models import match_price


def test_every_default_is_dated_and_sane() -> None:
    assert DEFAULT_PRICES
    for price in DEFAULT_PRICES:
        assert DEFAULT_PRICES_AS_OF in price.source
        assert price.effective_from is None
        assert price.input_micro_usd_per_mtok > 0
        assert price.output_micro_usd_per_mtok >= 0
        cached = price.cached_input_micro_usd_per_mtok
        assert cached is None or 0 < cached <= price.input_micro_usd_per_mtok


def test_each_model_appears_once() -> None:
    names = [price.model for price in DEFAULT_PRICES]
    assert len(names) == len(set(names))


def test_the_table_covers_the_common_models_and_their_snapshots() -> None:
    table = {price.model: price for price in DEFAULT_PRICES}
    for model in (
        "gpt-4o-2024-08-06",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1-2025-04-14",
        "gpt-5-2025-08-07",
        "o3-2025-04-16",
        "text-embedding-3-small",
        "claude-sonnet-4-20250514",
        "claude-opus-4-1-20250805",
        "claude-3-5-haiku-20241022",
    ):
        assert match_price(model, table) is not None, model
