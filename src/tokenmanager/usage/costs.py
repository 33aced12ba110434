"""Folding LLM calls into the per-model cost rollup (hour x token x team x route x model) and
into spend per token and team per local day and month. Pure.

Only LLM calls (`usage_source` set) reach the cost rollup; only calls with a known cost reach
the spend. Unknown strings are '' and an unknown token is 0 in the keys, as stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tokenmanager.calendar import PERIODS, period_bounds
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.rollup import hour_of

CostKey = tuple[datetime, int, str, str, str]  # hour, token_id, team_id, route_path, model
SpendKey = tuple[str, str, str, datetime]  # scope, subject, period, period_start (UTC)
SPEND_SCOPES = ("token", "team")


@dataclass(slots=True)
class CostRow:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    cost_pusd: int = 0
    unpriced_calls: int = 0
    estimated_calls: int = 0
    missing_calls: int = 0

    def add(self, event: UsageEvent) -> None:
        self.calls += 1
        self.prompt_tokens += event.prompt_tokens or 0
        self.completion_tokens += event.completion_tokens or 0
        self.cached_prompt_tokens += event.cached_prompt_tokens or 0
        self.reasoning_tokens += event.reasoning_tokens or 0
        if event.cost_pusd is None:
            self.unpriced_calls += 1
        else:
            self.cost_pusd += event.cost_pusd
        self.estimated_calls += event.usage_source == "estimated"
        self.missing_calls += event.usage_source == "missing"

    def values(self) -> tuple[int, ...]:
        return (
            self.calls, self.prompt_tokens, self.completion_tokens, self.cached_prompt_tokens,
            self.reasoning_tokens, self.cost_pusd, self.unpriced_calls, self.estimated_calls,
            self.missing_calls,
        )  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def cost_key(event: UsageEvent) -> CostKey:
    return (
        hour_of(_utc(event.used_at)),
        event.token_id or 0,
        event.team_id or "",
        event.route_path or "",
        event.model or "",
    )


def build_cost_rollup(events: Iterable[UsageEvent]) -> dict[CostKey, CostRow]:
    """The LLM calls among `events` folded by (hour, token id, team, route, model)."""
    rows: dict[CostKey, CostRow] = {}
    for event in events:
        if event.usage_source is None:
            continue
        key = cost_key(event)
        row = rows.get(key)
        if row is None:
            row = rows[key] = CostRow()
        row.add(event)
    return rows


class PeriodCutter:
    """Local period starts of moments, remembering the last period of each kind: a batch's
    events mostly fall in one day, so most lookups are a comparison, not a zone conversion."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._last: dict[str, tuple[datetime, datetime]] = {}

    def bounds(self, period: str, moment: datetime) -> tuple[datetime, datetime]:
        """The UTC [start, end) of the local `period` holding `moment`."""
        moment = _utc(moment)
        bounds = self._last.get(period)
        if bounds is None or not bounds[0] <= moment < bounds[1]:
            bounds = self._last[period] = period_bounds(period, moment, self.zone)
        return bounds

    def start(self, period: str, moment: datetime) -> datetime:
        return self.bounds(period, moment)[0]


def spend_subjects(token_id: int | None, team_id: str | None) -> list[tuple[str, str]]:
    """(scope, subject) pairs a call with a cost is charged to."""
    subjects = []
    if token_id is not None:
        subjects.append(("token", str(token_id)))
    if team_id:
        subjects.append(("team", team_id))
    return subjects


def build_spend(events: Iterable[UsageEvent], zone: ZoneInfo) -> dict[SpendKey, list[int]]:
    """{(scope, subject, period, period_start): [cost_pusd, calls]} of the events with a known
    cost, for the token and the team at call time, per local day and month in `zone`."""
    cutter = PeriodCutter(zone)
    spend: dict[SpendKey, list[int]] = {}
    for event in events:
        if event.cost_pusd is None:
            continue
        subjects = spend_subjects(event.token_id, event.team_id)
        if not subjects:
            continue
        for period in PERIODS:
            start = cutter.start(period, event.used_at)
            for scope, subject in subjects:
                entry = spend.setdefault((scope, subject, period, start), [0, 0])
                entry[0] += event.cost_pusd
                entry[1] += 1
    return spend


@dataclass(slots=True)
class UsageSums:
    """A token's calls over a span: errors, known tokens and cost, and how many LLM calls had
    no price (their cost is not in `cost_pusd`)."""

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pusd: int = 0
    llm_calls: int = 0
    unpriced_calls: int = 0

    def add_event(self, event: UsageEvent) -> None:
        self.calls += 1
        self.errors += event.is_error
        if event.usage_source is not None:
            self.llm_calls += 1
            self.prompt_tokens += event.prompt_tokens or 0
            self.completion_tokens += event.completion_tokens or 0
            self.unpriced_calls += event.cost_pusd is None
        self.cost_pusd += event.cost_pusd or 0


@dataclass(frozen=True, slots=True)
class TokenUsageSummary:
    """A token's own view: the current budget period's sums, and one entry per local day
    (its start in UTC, oldest first, days without calls included)."""

    period: UsageSums
    days: list[tuple[datetime, UsageSums]]
