"""Totals: summed rollup measures and the figures derived from them (average, rates,
percentiles, max), against plain arithmetic over the calls they were summed from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.analytics.figures import MEASURES, TIMED_CALLS, Totals, cost_usd
from tokenmanager.usage.histogram import BUCKET_COLUMNS, BUCKET_UPPER_BOUNDS_MS, bucket_bounds


@dataclass(frozen=True)
class Call:
    latency_ms: int | None
    is_error: bool
    bytes_in: int = 0
    bytes_out: int = 0


def totals_of(calls: list[Call]) -> Totals:
    """Totals summed by hand, as a rollup row would hold them."""
    totals = Totals()
    for call in calls:
        totals.calls += 1
        totals.errors += call.is_error
        totals.bytes_in += call.bytes_in
        totals.bytes_out += call.bytes_out
        if call.latency_ms is not None:
            totals.sum_latency_ms += call.latency_ms
            totals.timed_calls += 1
            totals.max_latency_ms = max(totals.max_latency_ms, call.latency_ms)
            index = next(
                i for i, bound in enumerate(BUCKET_UPPER_BOUNDS_MS) if call.latency_ms <= bound
            )
            totals.buckets[index] += 1
    return totals


def row_of(values: dict[str, int | None]) -> SimpleNamespace:
    return SimpleNamespace(_mapping=values)


calls_strategy = st.lists(
    st.builds(
        Call,
        latency_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=150_000)),
        is_error=st.booleans(),
        bytes_in=st.integers(min_value=0, max_value=10**9),
        bytes_out=st.integers(min_value=0, max_value=10**9),
    ),
    max_size=60,
)


def test_empty_totals_read_as_no_traffic() -> None:
    totals = Totals()
    assert totals.avg_response_time == 0.0
    assert totals.success_rate == 100.0
    assert totals.error_rate == 0.0
    assert totals.timed_calls == 0
    assert totals.latency_summary() == {
        "p50_response_time": None,
        "p95_response_time": None,
        "p99_response_time": None,
        "max_response_time": None,
    }


def test_calls_without_any_latency_have_no_latency_figures() -> None:
    totals = totals_of([Call(None, False), Call(None, True)])
    assert totals.avg_response_time == 0.0
    assert totals.success_rate == 50.0
    assert totals.latency_summary() == {
        "p50_response_time": None,
        "p95_response_time": None,
        "p99_response_time": None,
        "max_response_time": None,
    }


def test_average_counts_only_calls_with_a_latency() -> None:
    totals = totals_of([Call(10, False), Call(None, False), Call(21, True)])
    assert totals.avg_response_time == 15.5
    assert totals.timed_calls == 2


def test_rates_are_rounded_to_two_decimals() -> None:
    totals = totals_of([Call(1, index == 0) for index in range(3)])
    assert totals.error_rate == 33.33
    assert totals.success_rate == 66.67


def test_calls_that_all_failed_have_zero_success() -> None:
    totals = totals_of([Call(5, True), Call(None, True)])
    assert totals.success_rate == 0.0
    assert totals.error_rate == 100.0


def test_latency_of_zero_counts_as_a_known_latency() -> None:
    totals = totals_of([Call(0, False)])
    assert totals.avg_response_time == 0.0
    assert totals.latency_summary()["max_response_time"] == 0
    assert totals.percentile(0.5) is not None


def test_of_reads_null_sums_as_zero() -> None:
    values: dict[str, int | None] = dict.fromkeys((*MEASURES, *BUCKET_COLUMNS))
    totals = Totals.of(row_of(values))
    assert totals == Totals()


def test_of_reads_every_measure_and_bucket() -> None:
    values: dict[str, int | None] = {name: index + 1 for index, name in enumerate(MEASURES)}
    values |= {name: 100 + index for index, name in enumerate(BUCKET_COLUMNS)}
    totals = Totals.of(row_of(values))
    assert [getattr(totals, name) for name in MEASURES] == list(range(1, len(MEASURES) + 1))
    assert totals.buckets == [100 + index for index in range(len(BUCKET_COLUMNS))]
    assert totals.timed_calls == sum(totals.buckets)


def test_of_a_row_without_the_histogram_keeps_counts_and_averages_but_no_percentiles() -> None:
    totals = totals_of([Call(10, False), Call(30, True), Call(None, False)])
    values: dict[str, int | None] = {name: getattr(totals, name) for name in MEASURES}
    counted = Totals.of(row_of(values | {TIMED_CALLS: totals.timed_calls}))
    assert (counted.calls, counted.errors, counted.timed_calls) == (3, 1, 2)
    assert counted.avg_response_time == totals.avg_response_time == 20.0
    assert counted.success_rate == totals.success_rate
    with pytest.raises(ValueError, match="without their histogram"):
        counted.percentile(0.95)


@given(calls=calls_strategy)
def test_derived_figures_match_plain_arithmetic(calls: list[Call]) -> None:
    totals = totals_of(calls)
    timed = [call.latency_ms for call in calls if call.latency_ms is not None]
    errors = sum(call.is_error for call in calls)

    expected_avg = round(sum(timed) / len(timed), 1) if timed else 0.0
    assert totals.avg_response_time == pytest.approx(expected_avg, abs=0.05)
    if calls:
        assert totals.success_rate == pytest.approx(
            100 * (len(calls) - errors) / len(calls), abs=0.005
        )
        assert totals.error_rate == pytest.approx(100 * errors / len(calls), abs=0.005)
        assert totals.success_rate + totals.error_rate == pytest.approx(100.0, abs=0.011)
    summary = totals.latency_summary()
    assert summary["max_response_time"] == (max(timed) if timed else None)
    for key, fraction in (
        ("p50_response_time", "0.5"),
        ("p95_response_time", "0.95"),
        ("p99_response_time", "0.99"),
    ):
        value = summary[key]
        if not timed:
            assert value is None
            continue
        ordered = sorted(timed)
        true_value = ordered[math.ceil(Fraction(fraction) * len(ordered)) - 1]
        lower, upper = bucket_bounds(true_value)
        assert value is not None
        assert lower <= value <= upper


@given(first=calls_strategy, second=calls_strategy)
def test_adding_totals_equals_totals_of_all_calls(first: list[Call], second: list[Call]) -> None:
    combined = totals_of(first)
    combined.add(totals_of(second))
    assert combined == totals_of(first + second)


def test_cost_is_a_decimal_string_and_null_only_when_no_llm_call_was_priced() -> None:
    assert cost_usd(0, 0, 0) == "0"  # no LLM call: nothing spent
    assert cost_usd(1_500_000, 3, 0) == "0.0000015"
    assert cost_usd(12_500_000_000_000, 3, 2) == "12.5"  # partial: the priced call's cost
    assert cost_usd(0, 3, 3) is None  # LLM calls, none priced: unknown, not 0


def test_llm_sums_add_up_and_are_summarized_with_their_unknowns() -> None:
    first = Totals(llm_calls=2, prompt_tokens=10, completion_tokens=4, cost_pusd=7)
    second = Totals(llm_calls=1, unpriced_calls=1, missing_calls=1)
    first.add(second)
    assert first.llm_summary() == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "cost_usd": "0.000000000007",
        "llm_calls": 3,
        "unpriced_calls": 1,
        "estimated_calls": 0,
        "missing_calls": 1,
    }
