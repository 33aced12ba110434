"""The fixed latency histogram the hourly rollup keeps per row, for percentiles without sorting.

Bucket i counts calls with latency <= BUCKET_UPPER_BOUNDS_MS[i] (and above the previous bound);
the last bucket is open-ended. The bounds follow a 1-1.5-2-3-5-7 series, so a percentile read
from the buckets is off by at most the width of the bucket it falls in (at most 50 % of its lower
bound). Changing the bounds needs a migration and a `rollup rebuild`.
"""

from __future__ import annotations

import bisect

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
