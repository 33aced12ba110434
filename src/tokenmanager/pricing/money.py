"""Exact money. Costs are integer pico-dollars (1 pUSD = 10^-12 USD), prices integer
micro-dollars per million tokens, budgets integer micro-dollars: a price has at most six
decimals, so tokens x price is an exact whole number of pico-dollars and nothing ever rounds.
In JSON, money is a string with the exact decimal in USD ("0.0000015"), or null when unknown.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PUSD_PER_USD = 10**12
MICRO_PER_USD = 10**6
# A price or budget larger than this is a typo, not a price (and keeps sums far from 2^63).
MAX_USD = Decimal(1_000_000)


def parse_usd(value: str | int | float | Decimal, *, max_decimals: int = 6) -> Decimal:
    """A non-negative USD amount with at most `max_decimals` decimals, exactly as written.

    Raises ValueError (with a message fit for a 422) for anything else: negative, NaN,
    infinite, too precise, too large, not a number. A float is read through its shortest
    decimal form, so 0.15 means 0.15 and not 0.1499999999999999944.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number of US dollars")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError("must be a number of US dollars") from None
    if not amount.is_finite():
        raise ValueError("must be a finite number of US dollars")
    if amount < 0:
        raise ValueError("must not be negative")
    if amount > MAX_USD:
        raise ValueError(f"must be at most {MAX_USD} US dollars")
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > max_decimals:
        raise ValueError(f"must have at most {max_decimals} decimal places")
    return amount


def usd_to_micro(amount: Decimal) -> int:
    """Exact: `amount` has at most six decimals (see `parse_usd`)."""
    micro = amount * MICRO_PER_USD
    if micro != micro.to_integral_value():
        raise ValueError("must have at most 6 decimal places")
    return int(micro)


def format_usd(pusd: int) -> str:
    """Pico-dollars as the exact decimal string in USD, normalized: "12.5", "0.0000015", "0"."""
    sign = "-" if pusd < 0 else ""
    whole, fraction = divmod(abs(pusd), PUSD_PER_USD)
    digits = f"{fraction:012d}".rstrip("0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def format_micro_usd(micro: int) -> str:
    """Micro-dollars (prices, budgets) as the exact decimal string in USD."""
    return format_usd(micro * (PUSD_PER_USD // MICRO_PER_USD))


def micro_to_pusd(micro: int) -> int:
    return micro * (PUSD_PER_USD // MICRO_PER_USD)
