"""Folding usage events into rollup rows (hour or day x token x route x status class). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.histogram import BUCKET_COLUMNS, bucket_index

RollupKey = tuple[datetime, str, str, int]


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


PERIOD_STARTS = {"hour": hour_of, "day": day_of}


@dataclass(slots=True)
class RollupRow:
    token_id: int | None = None
    calls: int = 0
    errors: int = 0
    sum_latency_ms: int = 0
    max_latency_ms: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKET_COLUMNS))
    # LLM calls: known counts and costs summed; the counts of calls whose cost or counts are
    # unknown beside them (schema.LLM_ROLLUP_COLUMNS).
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pusd: int = 0
    llm_calls: int = 0
    unpriced_calls: int = 0
    estimated_calls: int = 0
    missing_calls: int = 0

    def add(self, event: UsageEvent) -> None:
        self.token_id = self.token_id or event.token_id
        self.calls += 1
        self.errors += event.is_error
        self.bytes_in += event.bytes_in or 0
        self.bytes_out += event.bytes_out or 0
        latency = event.response_time_ms
        if latency is not None:
            self.sum_latency_ms += latency
            self.max_latency_ms = max(self.max_latency_ms, latency)
            self.buckets[bucket_index(latency)] += 1
        if event.usage_source is not None:
            self.llm_calls += 1
            self.prompt_tokens += event.prompt_tokens or 0
            self.completion_tokens += event.completion_tokens or 0
            self.unpriced_calls += event.cost_pusd is None
            self.estimated_calls += event.usage_source == "estimated"
            self.missing_calls += event.usage_source == "missing"
        self.cost_pusd += event.cost_pusd or 0

    def llm_values(self) -> tuple[int, ...]:
        """The LLM sums, in the order of schema.LLM_ROLLUP_COLUMNS."""
        return (
            self.prompt_tokens, self.completion_tokens, self.cost_pusd, self.llm_calls,
            self.unpriced_calls, self.estimated_calls, self.missing_calls,
        )  # fmt: skip

    def merge(self, other: RollupRow) -> None:
        """Add another row's counts (of the same token, route and status class)."""
        self.token_id = self.token_id or other.token_id
        self.calls += other.calls
        self.errors += other.errors
        self.sum_latency_ms += other.sum_latency_ms
        self.max_latency_ms = max(self.max_latency_ms, other.max_latency_ms)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_pusd += other.cost_pusd
        self.llm_calls += other.llm_calls
        self.unpriced_calls += other.unpriced_calls
        self.estimated_calls += other.estimated_calls
        self.missing_calls += other.missing_calls


def fold_event(rows: dict[RollupKey, RollupRow], event: UsageEvent, period: str) -> None:
    """Add one event to the rollup rows being built."""
    used_at = event.used_at
    # Periods are UTC hours and days: in another zone, day_of() would give a local midnight
    # (and hour_of() a :30 for +05:30). Naive times are UTC, as the database stores them.
    used_at = used_at.replace(tzinfo=UTC) if used_at.tzinfo is None else used_at.astimezone(UTC)
    key = (
        PERIOD_STARTS[period](used_at),
        event.token_hash,
        event.route_path or "",
        event.status_class,
    )
    row = rows.get(key)
    if row is None:
        row = rows[key] = RollupRow()
    row.add(event)


def build_rollup(events: Iterable[UsageEvent], period: str = "hour") -> dict[RollupKey, RollupRow]:
    """Events folded by (period start, token hash, route, status class); period: hour or day."""
    rows: dict[RollupKey, RollupRow] = {}
    for event in events:
        fold_event(rows, event, period)
    return rows


def regroup(rows: dict[RollupKey, RollupRow], period: str) -> dict[RollupKey, RollupRow]:
    """Rollup rows of a shorter period summed into `period` rows (hours into days): the same
    figures as folding the events again, for a fraction of the work."""
    regrouped: dict[RollupKey, RollupRow] = {}
    for (start, token_hash, route_path, status_class), row in rows.items():
        key = (PERIOD_STARTS[period](start), token_hash, route_path, status_class)
        regrouped.setdefault(key, RollupRow()).merge(row)
    return regrouped
