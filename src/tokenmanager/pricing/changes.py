"""One entry of the admin price table's history: a price set for a model from a moment on, or
its removal (then `price` is None: from that moment the model has no price, default or not)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from tokenmanager.pricing.models import Price

MAX_MODEL_NAME_CHARS = 200
# Model names are free-form ("openai/gpt-4o", "llama3:8b", "gpt-4o-2024-08-06"), but never
# contain whitespace or control characters: those are typos or injection attempts.
_BAD_MODEL_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class PriceChange:
    model: str
    effective_from: datetime
    price: Price | None  # None: the model's price was removed at `effective_from`
    created_by: str

    @property
    def is_removal(self) -> bool:
        return self.price is None


def check_model_name(model: str) -> str:
    """The model name unchanged; ValueError (a message fit for a 422) when it is unusable."""
    if not 1 <= len(model) <= MAX_MODEL_NAME_CHARS:
        raise ValueError(f"must be 1-{MAX_MODEL_NAME_CHARS} characters")
    if _BAD_MODEL_CHARS.search(model):
        raise ValueError("must not contain whitespace or control characters")
    return model
