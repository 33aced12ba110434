"""The current price table of one process, replaced whole (never edited in place), so a reader
always sees one consistent table. Pure: whoever loads prices (the store, the defaults) hands
them in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from tokenmanager.llm.models import LlmUsage
from tokenmanager.pricing.models import Price, compute_cost_pusd, match_price


class PriceBook:
    """Prices by model name. `replace` swaps the whole table in one assignment: a cost is
    always computed from one table, never half an old and half a new one."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: Mapping[str, Price] = MappingProxyType(dict(prices or {}))

    @classmethod
    def of(cls, prices: Iterable[Price]) -> PriceBook:
        return cls({price.model: price for price in prices})

    @property
    def prices(self) -> Mapping[str, Price]:
        """The current table (read-only)."""
        return self._prices

    def replace(self, prices: Mapping[str, Price]) -> None:
        self._prices = MappingProxyType(dict(prices))

    def cost_for(self, usage: LlmUsage) -> int | None:
        """The call's cost in pico-dollars at today's prices; None when the model has no
        price or a count is unknown."""
        return compute_cost_pusd(match_price(usage.model, self._prices), usage)
