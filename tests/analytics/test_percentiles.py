"""Percentiles read from the fixed latency histogram: for any sample, the value lies within the
bounds of the bucket that holds the true (nearest-rank) percentile, which is the error bound the
histogram module documents."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmanager.usage.histogram import (
    BUCKET_COLUMNS,
    BUCKET_UPPER_BOUNDS_MS,
    bucket_bounds,
    bucket_index,
    percentile,
)

FRACTIONS = ("0.5", "0.95", "0.99")
FINITE_BOUNDS = [int(bound) for bound in BUCKET_UPPER_BOUNDS_MS[:-1]]
# Latencies next to every bucket bound are where an off-by-one would show.
EDGE_LATENCIES = sorted({max(b + d, 0) for b in FINITE_BOUNDS for d in (-1, 0, 1)} | {0})

latencies_ms = st.one_of(
    st.sampled_from(EDGE_LATENCIES),
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=0, max_value=200_000),
)
samples = st.lists(latencies_ms, min_size=1, max_size=300)


def nearest_rank(sample: list[int], fraction: str) -> int:
    """The smallest value with at least `fraction` of the sample at or below it."""
    ordered = sorted(sample)
    rank = math.ceil(Fraction(fraction) * len(ordered))
    return ordered[max(rank, 1) - 1]


def histogram_of(sample: list[int]) -> list[int]:
    """Bucket counts, computed from the bounds without the module's bisect."""
    counts = [0] * len(BUCKET_UPPER_BOUNDS_MS)
    for latency in sample:
        index = next(i for i, bound in enumerate(BUCKET_UPPER_BOUNDS_MS) if latency <= bound)
        counts[index] += 1
    return counts


# -- buckets ---------------------------------------------------------------------------------


def test_there_is_one_column_per_bucket_and_the_last_is_open_ended() -> None:
    assert len(BUCKET_COLUMNS) == len(BUCKET_UPPER_BOUNDS_MS)
    assert BUCKET_UPPER_BOUNDS_MS[-1] == float("inf")
    assert list(BUCKET_UPPER_BOUNDS_MS) == sorted(set(BUCKET_UPPER_BOUNDS_MS))


@pytest.mark.parametrize("latency", EDGE_LATENCIES)
def test_bucket_index_puts_a_latency_in_the_first_bucket_whose_bound_is_not_below_it(
    latency: int,
) -> None:
    expected = next(i for i, bound in enumerate(BUCKET_UPPER_BOUNDS_MS) if latency <= bound)
    assert bucket_index(latency) == expected


@given(latency=latencies_ms)
def test_bucket_bounds_hold_the_latency(latency: int) -> None:
    lower, upper = bucket_bounds(latency)
    assert lower <= latency <= upper
    assert lower < latency or latency == 0
    # The documented width: at most half the lower bound beyond the first buckets.
    if 10 <= lower < BUCKET_UPPER_BOUNDS_MS[-2]:
        assert upper - lower <= lower


# -- percentiles -----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_percentile_of_an_empty_histogram_is_none(fraction: str) -> None:
    assert percentile([0] * len(BUCKET_COLUMNS), float(fraction)) is None
    assert percentile([0] * len(BUCKET_COLUMNS), float(fraction), 250) is None


@given(sample=samples, knows_max=st.booleans())
def test_percentile_lies_within_the_bucket_of_the_true_percentile(
    sample: list[int], knows_max: bool
) -> None:
    buckets = histogram_of(sample)
    max_latency = max(sample) if knows_max else None
    for fraction in FRACTIONS:
        value = percentile(buckets, float(fraction), max_latency)
        true_value = nearest_rank(sample, fraction)
        lower, upper = bucket_bounds(true_value)
        assert value is not None
        assert lower <= value <= upper, (fraction, true_value, value)
        if max_latency is not None:
            # Capped by the largest latency seen: off by at most the bucket's width below it.
            assert value <= max(lower, max_latency)
            assert abs(value - true_value) <= max(min(upper, max_latency) - lower, 0)


@given(sample=samples, knows_max=st.booleans())
def test_p50_p95_p99_never_decrease(sample: list[int], knows_max: bool) -> None:
    buckets = histogram_of(sample)
    max_latency = max(sample) if knows_max else None
    p50, p95, p99 = (percentile(buckets, float(f), max_latency) for f in FRACTIONS)
    assert p50 is not None
    assert p95 is not None
    assert p99 is not None
    assert p50 <= p95 <= p99


@given(latency=latencies_ms, count=st.integers(min_value=1, max_value=50))
def test_percentile_of_identical_latencies_is_in_their_bucket(latency: int, count: int) -> None:
    buckets = histogram_of([latency] * count)
    lower, upper = bucket_bounds(latency)
    for fraction in FRACTIONS:
        value = percentile(buckets, float(fraction), latency)
        assert value is not None
        assert lower <= value <= min(upper, max(lower, latency))


def test_percentile_in_the_open_last_bucket_is_capped_at_the_largest_latency() -> None:
    sample = [150_000, 300_000]
    buckets = histogram_of(sample)
    # Both calls in (120 000, 300 000]: rank 1.98 of 2 interpolates to 99 % of the way up.
    assert percentile(buckets, 0.99, 300_000) == pytest.approx(120_000 + 0.99 * 180_000)
    # Without the largest latency the open bucket reads as its lower bound.
    assert percentile(buckets, 0.99) == BUCKET_UPPER_BOUNDS_MS[-2]
