"""Price matching by model name and snapshot, and the exact cost of one call."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.pricing.models import Price, compute_cost_pusd, match_price
from tokenmanager.pricing.money import PUSD_PER_USD


def price(
    model: str, input_micro: int, output_micro: int, cached_micro: int | None = None
) -> Price:
    return Price(
        model=model,
        input_micro_usd_per_mtok=input_micro,
        output_micro_usd_per_mtok=output_micro,
        cached_input_micro_usd_per_mtok=cached_micro,
        effective_from=None,
        source="admin",
    )


def usage(
    prompt: int | None,
    completion: int | None,
    cached: int | None = None,
    reasoning: int | None = None,
) -> LlmUsage:
    return LlmUsage(
        model="m",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        reasoning_tokens=reasoning,
        usage_source=UsageSource.REPORTED,
    )


PRICES = {p.model: p for p in DEFAULT_PRICES}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),  # OpenAI's dated snapshot
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot with its own price wins
        ("gpt-4o-mini", "gpt-4o-mini"),  # not gpt-4o: its own, longer name
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),  # Anthropic's compact date
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-4o-audio-preview", None),  # another model, not a snapshot of gpt-4o
        ("gpt-4o-search-preview-2025-03-11", None),
        ("gpt-4o-2024-08", None),  # not a full date
        ("gpt-4o-123456789", None),
        ("GPT-4O", None),  # names are case-sensitive, as the APIs treat them
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", None),  # fine-tunes have their own prices
        ("mock-model", None),
        ("", None),
        (None, None),
    ],
)
def test_match_price_takes_exact_names_and_dated_snapshots_only(
    model: str | None, expected: str | None
) -> None:
    matched = match_price(model, PRICES)
    assert (matched.model if matched else None) == expected


def test_match_price_prefers_an_exact_admin_price_over_the_base_model() -> None:
    prices = {
        "gpt-4o": price("gpt-4o", 1, 1),
        "gpt-4o-2024-08-06": price("gpt-4o-2024-08-06", 2, 2),
    }
    assert match_price("gpt-4o-2024-08-06", prices) == prices["gpt-4o-2024-08-06"]
    assert match_price("gpt-4o-2024-11-20", prices) == prices["gpt-4o"]
    assert match_price("gpt-4o", {}) is None


def test_cost_is_tokens_times_micro_price_in_pico_dollars() -> None:
    gpt_4o_mini = PRICES["gpt-4o-mini"]  # 0.15 in, 0.6 out, 0.075 cached per million
    cost = compute_cost_pusd(gpt_4o_mini, usage(1000, 500))
    # 1000 x 0.15/1e6 + 500 x 0.6/1e6 USD = 0.00015 + 0.0003 = 0.00045 USD exactly
    assert cost == 450_000_000
    assert Decimal(cost) / PUSD_PER_USD == Decimal("0.00045")


def test_cached_tokens_are_part_of_the_prompt_at_the_cached_price() -> None:
    gpt_4o_mini = PRICES["gpt-4o-mini"]
    # 1000 prompt of which 600 cached: 400 x 0.15 + 600 x 0.075 + 10 x 0.6 micro-USD
    assert compute_cost_pusd(gpt_4o_mini, usage(1000, 10, cached=600)) == (
        400 * 150_000 + 600 * 75_000 + 10 * 600_000
    )


def test_cached_tokens_cost_the_input_price_when_the_model_has_no_cached_price() -> None:
    no_cache = price("x", 3_000_000, 15_000_000, None)
    assert compute_cost_pusd(no_cache, usage(100, 0, cached=40)) == 100 * 3_000_000


def test_cached_count_above_the_prompt_is_clamped_to_the_prompt() -> None:
    p = price("x", 10, 100, 1)
    assert compute_cost_pusd(p, usage(5, 0, cached=9)) == 5 * 1


def test_reasoning_tokens_are_priced_as_the_output_they_are_part_of() -> None:
    p = price("x", 10, 100, None)
    assert compute_cost_pusd(p, usage(0, 50, reasoning=40)) == compute_cost_pusd(p, usage(0, 50))


@pytest.mark.parametrize(
    "unknown",
    [usage(None, 5), usage(5, None), usage(None, None)],
)
def test_cost_is_none_when_a_count_is_unknown(unknown: LlmUsage) -> None:
    assert compute_cost_pusd(PRICES["gpt-4o"], unknown) is None


def test_cost_is_none_without_a_price_and_zero_for_zero_tokens() -> None:
    assert compute_cost_pusd(None, usage(10, 10)) is None
    assert compute_cost_pusd(PRICES["gpt-4o"], usage(0, 0)) == 0


counts = st.integers(min_value=0, max_value=10**9)
rates = st.integers(min_value=0, max_value=10**12)


@given(
    st.tuples(rates, rates, st.none() | rates),
    st.tuples(counts, counts, counts),
    st.tuples(counts, counts, counts),
)
def test_cost_is_integral_and_additive_over_calls(
    rate: tuple[int, int, int | None],
    first: tuple[int, int, int],
    second: tuple[int, int, int],
) -> None:
    p = price("x", *rate)

    def call(prompt: int, completion: int, cached: int) -> LlmUsage:
        return usage(prompt + cached, completion, cached=cached)

    one = compute_cost_pusd(p, call(*first))
    two = compute_cost_pusd(p, call(*second))
    both = compute_cost_pusd(
        p, call(first[0] + second[0], first[1] + second[1], first[2] + second[2])
    )
    assert isinstance(one, int)
    assert isinstance(two, int)
    assert one >= 0
    assert two >= 0
    assert one + two == both
    # The same figure as exact decimal arithmetic on USD per million tokens.
    cached_rate = rate[2] if rate[2] is not None else rate[0]
    exact_usd = (
        (
            Decimal(first[0]) * rate[0]
            + Decimal(first[2]) * cached_rate
            + Decimal(first[1]) * rate[1]
        )
        / 10**6
        / 10**6
    )
    assert Decimal(one) / PUSD_PER_USD == exact_usd
