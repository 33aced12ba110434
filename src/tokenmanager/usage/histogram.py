"""The fixed latency histogram the hourly rollup keeps per row, for percentiles without sorting.

Bucket i counts calls with latency <= BUCKET_UPPER_BOUNDS_MS[i] (and above the previous bound);
the last bucket is open-ended. The bounds follow a 1-1.5-2-3-5-7 series, so a percentile read
from the buckets is off by at most the width of the bucket it falls in (at most 50 % of its lower
bound). Changing the bounds needs a migration and a `rollup rebuild`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

BUCKET_UPPER_BOUNDS_MS: tuple[float, ...] = (
    1,
    2,
    3,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    70,
    100,
    150,
    200,
    300,
    500,
    700,
    1000,
    1500,
    2000,
    3000,
    5000,
    7000,
    10000,
    15000,
    20000,
    30000,
    60000,
    120000,
    float("inf"),
)
BUCKET_COLUMNS: tuple[str, ...] = tuple(f"h{i:02d}" for i in range(len(BUCKET_UPPER_BOUNDS_MS)))


def bucket_index(latency_ms: float) -> int:
    """The bucket a latency falls in."""
    return bisect.bisect_left(BUCKET_UPPER_BOUNDS_MS, latency_ms)


def percentile(
    buckets: Sequence[int], fraction: float, max_latency_ms: float | None = None
) -> float | None:
    """The `fraction` quantile (0.95 for p95) of the latencies counted in `buckets`.

    Interpolated linearly inside the bucket that holds the quantile, so the answer lies within
    that bucket's bounds: its error is at most the bucket's width. The open-ended last bucket is
    capped at `max_latency_ms` when it is known. None when nothing was counted.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = BUCKET_UPPER_BOUNDS_MS[index - 1] if index else 0.0
            upper = BUCKET_UPPER_BOUNDS_MS[index]
            if upper == float("inf"):
                upper = max(lower, max_latency_ms) if max_latency_ms is not None else lower
            if max_latency_ms is not None:
                upper = min(upper, max(lower, max_latency_ms))
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
    return BUCKET_UPPER_BOUNDS_MS[-2]


def bucket_bounds(latency_ms: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the bucket a latency falls in: a percentile read from the
    buckets for a true value of `latency_ms` lies within them."""
    index = bucket_index(latency_ms)
    lower = BUCKET_UPPER_BOUNDS_MS[index - 1] if index else 0.0
    return lower, BUCKET_UPPER_BOUNDS_MS[index]
