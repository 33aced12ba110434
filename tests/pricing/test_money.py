"""Exact money: parsing USD input, formatting pico-dollars."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.pricing.money import (
    MAX_USD,
    format_micro_usd,
    format_usd,
    micro_to_pusd,
    parse_usd,
    usd_to_micro,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", Decimal(0)),
        ("12.5", Decimal("12.5")),
        (" 2.25 ", Decimal("2.25")),
        ("0.000001", Decimal("0.000001")),
        ("0.1000000", Decimal("0.1")),  # trailing zeros are not precision
        ("1E+2", Decimal(100)),
        (3, Decimal(3)),
        (0.15, Decimal("0.15")),  # the float's shortest form, not 0.1499999999999999944...
        (2.5e-5, Decimal("0.000025")),  # repr "2.5e-05"
        (Decimal("0.075"), Decimal("0.075")),
        (MAX_USD, MAX_USD),
    ],
)
def test_parse_usd_accepts_exact_amounts(
    value: str | int | float | Decimal, expected: Decimal
) -> None:
    assert parse_usd(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "negative"),
        (-0.01, "negative"),
        (Decimal("-0.000001"), "negative"),
        ("NaN", "finite"),
        (float("nan"), "finite"),
        (Decimal("sNaN"), "finite"),
        ("Infinity", "finite"),
        (float("inf"), "finite"),
        ("-inf", "finite"),
        ("0.0000001", "6 decimal places"),
        (1e-7, "6 decimal places"),
        ("1e-7", "6 decimal places"),
        (0.1 + 0.2, "6 decimal places"),  # 0.30000000000000004 is not a price
        ("1000000.000001", "at most"),
        (1e16, "at most"),
        ("", "number"),
        ("twelve", "number"),
        ("0x10", "number"),
        ("1,5", "number"),
        (True, "number"),
        (False, "number"),
    ],
)
def test_parse_usd_refuses_anything_else(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_usd(value)  # type: ignore[arg-type]


def test_parse_usd_honours_max_decimals() -> None:
    assert parse_usd("0.01", max_decimals=2) == Decimal("0.01")
    with pytest.raises(ValueError, match="at most 2 decimal places"):
        parse_usd("0.001", max_decimals=2)
    assert parse_usd("0.000000000001", max_decimals=12) == Decimal("1E-12")


def test_usd_to_micro_is_exact_and_refuses_more_precision() -> None:
    assert usd_to_micro(Decimal("0.15")) == 150_000
    assert usd_to_micro(Decimal("1E+2")) == 100_000_000
    assert usd_to_micro(Decimal("0.000001")) == 1
    with pytest.raises(ValueError, match="6 decimal places"):
        usd_to_micro(Decimal("0.0000001"))


@pytest.mark.parametrize(
    ("pusd", "text"),
    [
        (0, "0"),
        (1, "0.000000000001"),
        (1_500_000, "0.0000015"),
        (12_500_000_000_000, "12.5"),
        (10**12, "1"),
        (10**13, "10"),
        (123 * 10**12 + 450_000_000_000, "123.45"),
        (-1_500_000, "-0.0000015"),
        (-(10**12), "-1"),
        (10**24 + 1, "1000000000000.000000000001"),
    ],
)
def test_format_usd_is_the_normalized_exact_decimal(pusd: int, text: str) -> None:
    assert format_usd(pusd) == text


def test_format_micro_usd_and_micro_to_pusd() -> None:
    assert format_micro_usd(150_000) == "0.15"
    assert format_micro_usd(0) == "0"
    assert micro_to_pusd(1) == 10**6


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_format_usd_round_trips_through_decimal(pusd: int) -> None:
    text = format_usd(pusd)
    assert "e" not in text.lower()
    with localcontext() as context:
        context.prec = 100  # the default 28 digits would round the check itself
        assert Decimal(text) * 10**12 == pusd
    assert not text.endswith(".")
    assert ("." not in text) or not text.endswith("0")


@given(st.decimals(min_value=0, max_value=MAX_USD, places=6, allow_nan=False))
def test_parse_usd_then_format_gives_the_same_amount(amount: Decimal) -> None:
    parsed = parse_usd(str(amount))
    assert Decimal(format_micro_usd(usd_to_micro(parsed))) == amount
