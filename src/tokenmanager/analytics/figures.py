"""Summed rollup measures and what is derived from them (averages, rates, percentiles). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenmanager.pricing.money import format_usd
from tokenmanager.usage.histogram import BUCKET_COLUMNS, percentile

# LLM sums of the rollups: known tokens and costs, and how many LLM calls had no price,
# estimated or missing counts (so a partial sum is never mistaken for a whole one).
LLM_MEASURES = (
    "prompt_tokens", "completion_tokens", "cost_pusd",
    "llm_calls", "unpriced_calls", "estimated_calls", "missing_calls",
)  # fmt: skip
MEASURES = (
    "calls", "errors", "sum_latency_ms", "max_latency_ms", "bytes_in", "bytes_out",
    *LLM_MEASURES,
)  # fmt: skip
TIMED_CALLS = "timed_calls"


@dataclass(slots=True)
class Totals:
    """Summed measures. `buckets` is the latency histogram; figures summed without it (calls
    per hour for a time profile, say: `Totals.of` a row without bucket columns) keep it all
    zeros and have no percentiles."""

    calls: int = 0
    errors: int = 0
    sum_latency_ms: int = 0
    max_latency_ms: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    timed_calls: int = 0  # calls with a known latency: each is counted in exactly one bucket
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKET_COLUMNS))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pusd: int = 0
    llm_calls: int = 0
    unpriced_calls: int = 0
    estimated_calls: int = 0
    missing_calls: int = 0

    @classmethod
    def of(cls, row: Any) -> Totals:
        """From a row with the MEASURES and either the bucket columns or their total,
        `timed_calls` (NULL sums count as 0)."""
        mapping = row._mapping
        totals = cls()
        for name in MEASURES:
            setattr(totals, name, int(mapping[name] or 0))
        if TIMED_CALLS in mapping:
            totals.timed_calls = int(mapping[TIMED_CALLS] or 0)
        else:
            totals.buckets = [int(mapping[name] or 0) for name in BUCKET_COLUMNS]
            totals.timed_calls = sum(totals.buckets)
        return totals

    def add(self, other: Totals) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.sum_latency_ms += other.sum_latency_ms
        self.max_latency_ms = max(self.max_latency_ms, other.max_latency_ms)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.timed_calls += other.timed_calls
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        for name in LLM_MEASURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def llm_summary(self) -> dict[str, Any]:
        """Tokens and cost, with the counts of LLM calls whose figures are unknown."""
        return llm_figures(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_pusd=self.cost_pusd,
            llm_calls=self.llm_calls,
            unpriced_calls=self.unpriced_calls,
            estimated_calls=self.estimated_calls,
            missing_calls=self.missing_calls,
        )

    @property
    def avg_response_time(self) -> float:
        timed = self.timed_calls
        return round(self.sum_latency_ms / timed, 1) if timed else 0.0

    @property
    def success_rate(self) -> float:
        """Percent of calls that were not errors (100.0 when there were none)."""
        return round(100.0 * (self.calls - self.errors) / self.calls, 2) if self.calls else 100.0

    @property
    def error_rate(self) -> float:
        return round(100.0 * self.errors / self.calls, 2) if self.calls else 0.0

    def percentile(self, fraction: float) -> float | None:
        if self.timed_calls and not any(self.buckets):
            raise ValueError("figures summed without their histogram have no percentiles")
        value = percentile(self.buckets, fraction, self.max_latency_ms or None)
        return None if value is None else round(value, 1)

    def latency_summary(self) -> dict[str, float | None]:
        return {
            "p50_response_time": self.percentile(0.50),
            "p95_response_time": self.percentile(0.95),
            "p99_response_time": self.percentile(0.99),
            # Calls without a latency leave max_latency_ms at 0: that is no latency, not 0 ms.
            "max_response_time": self.max_latency_ms if self.timed_calls else None,
        }


def cost_usd(cost_pusd: int, llm_calls: int, unpriced_calls: int) -> str | None:
    """The exact decimal in USD of the priced calls' cost; None when there were LLM calls and
    none of them had a price (unknown, not 0). With some unpriced, it is the priced calls' sum:
    a lower bound, which `unpriced_calls` beside it says."""
    if llm_calls and unpriced_calls >= llm_calls:
        return None
    return format_usd(cost_pusd)


def llm_figures(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cost_pusd: int,
    llm_calls: int,
    unpriced_calls: int,
    estimated_calls: int,
    missing_calls: int,
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": cost_usd(cost_pusd, llm_calls, unpriced_calls),
        "llm_calls": llm_calls,
        "unpriced_calls": unpriced_calls,
        "estimated_calls": estimated_calls,
        "missing_calls": missing_calls,
    }
