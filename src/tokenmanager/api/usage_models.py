"""The analytics API's answers as types: the seed's shapes (`/api/usage/stats`, `/token/{id}`,
`/route`, `test-data`) and the drill-downs, built by pure functions from the analytics
service's results. A field the service renames or adds without a model here fails validation
(a 500 in every test that reads the answer), never a customer's dashboard silently.

LLM figures (`prompt_tokens`, `completion_tokens`, `cost_usd` as a decimal string, and on call
rows `model` and `usage_source`) are optional: present where the service reports them, and
`null` when unknown, never 0.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IsoTime = str  # ISO-8601 with the UTC offset, as the seed's clients parse it


class Answer(BaseModel):
    # Unknown fields are refused: every field the API answers with is declared here.
    model_config = ConfigDict(extra="forbid")


class LlmFigures(Answer):
    """What LLM calls used: `cost_usd` is an exact decimal string, null when every LLM call had
    no price; the counts beside it say how much of the figure is unknown or estimated."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: str | None = Field(default=None, description="Decimal string in US dollars")
    llm_calls: int | None = None
    unpriced_calls: int | None = Field(default=None, description="LLM calls without a price")
    estimated_calls: int | None = Field(default=None, description="LLM calls counted by estimate")
    missing_calls: int | None = Field(default=None, description="LLM calls with unknown counts")


class LatencySummary(Answer):
    p50_response_time: float | None
    p95_response_time: float | None
    p99_response_time: float | None
    max_response_time: int | None


class WindowView(Answer):
    since: IsoTime
    until: IsoTime


class BucketedWindowView(WindowView):
    bucket: Literal["hour", "day"]


class Overview(LatencySummary, LlmFigures):
    total_calls: int
    total_errors: int
    avg_response_time: float
    success_rate: float
    error_rate: float
    unique_tokens: int
    active_tokens: int
    idle_tokens: int
    bytes_in: int
    bytes_out: int


class SeriesPoint(LlmFigures):
    hour: IsoTime = Field(description="The hour's (or with bucket=day the day's) start")
    call_count: int
    error_count: int
    avg_response_time: float
    p50_response_time: float | None
    p95_response_time: float | None


class TokenEntry(LlmFigures):
    token_id: int | None = Field(description="null for calls with a hash that matches no token")
    name: str
    team_id: str | None
    usage_count: int
    error_count: int
    avg_response_time: float
    success_rate: float
    token_hash_prefix: str | None


class RouteEntry(LlmFigures):
    route_path: str | None
    call_count: int
    error_count: int
    avg_response_time: float
    success_rate: float
    p95_response_time: float | None


class UsageStats(Answer):
    window: BucketedWindowView
    overview: Overview
    hourly_usage: list[SeriesPoint]
    top_tokens: list[TokenEntry]
    top_routes: list[RouteEntry]


class UsageEntry(Answer):
    """One call, as the drill-downs list them."""

    route_path: str | None
    used_at: IsoTime
    response_status: int | None
    response_time_ms: int | None
    request_method: str | None
    ip_address: str | None
    failure_kind: str | None
    error_message: str | None
    token_id: int | None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: str | None = Field(default=None, description="Decimal string in US dollars")
    usage_source: str | None = Field(
        default=None, description="reported, estimated or missing (LLM calls)"
    )


class StatusCount(Answer):
    status: int | None
    count: int


class FailureKindCount(Answer):
    failure_kind: str | None
    count: int


class MessageCount(Answer):
    message: str | None
    count: int


class ErrorBreakdown(Answer):
    by_status: list[StatusCount]
    by_failure_kind: list[FailureKindCount]
    top_messages: list[MessageCount]


class TokenInfo(Answer):
    id: int
    name: str
    team_id: str
    display_prefix: str
    state: str


class TokenStats(LatencySummary, LlmFigures):
    total_calls: int
    error_count: int
    avg_response_time: float
    first_used: IsoTime | None
    last_used: IsoTime | None
    error_rate: float
    success_rate: float


class Page(Answer):
    limit: int
    offset: int
    returned: int


class TimeProfile(Answer):
    timezone: str
    weekdays: list[str]
    calls: list[list[int]] = Field(description="Calls per weekday (rows) and hour of day")


class TokenUsage(Answer):
    window: WindowView
    token: TokenInfo
    stats: TokenStats
    recent_usage: list[UsageEntry]
    recent_usage_page: Page
    route_distribution: list[RouteEntry]
    time_profile: TimeProfile
    errors: ErrorBreakdown


class RouteInfo(Answer):
    route_path: str


class RouteStats(LatencySummary, LlmFigures):
    total_calls: int
    error_count: int
    error_rate: float
    success_rate: float
    avg_response_time: float


class RouteUsage(Answer):
    window: WindowView
    route: RouteInfo
    stats: RouteStats
    token_distribution: list[TokenEntry]
    latency_trend: list[SeriesPoint]
    errors: ErrorBreakdown


class UsageErrors(ErrorBreakdown):
    window: WindowView
    total_calls: int
    total_errors: int
    error_rate: float
    recent_errors: list[UsageEntry]


class SlowCalls(Answer):
    window: WindowView
    calls: list[UsageEntry]


class IdleToken(Answer):
    id: int
    name: str
    team_id: str
    created_at: IsoTime | None
    last_used: IsoTime | None
    idle_days: int
    never_used: bool


class IdleTokens(Answer):
    days: int
    tokens: list[IdleToken]


class UsageRecord(BaseModel):
    """One raw usage record (test-data, export). Columns the raw log gains later pass through:
    this is the dev-mode view of the table, not an aggregate contract."""

    model_config = ConfigDict(extra="allow")

    id: int
    event_id: str
    token_hash: str
    token_id: int | None
    route_path: str | None
    used_at: IsoTime
    response_status: int | None
    response_time_ms: int | None
    ttfb_ms: int | None
    ip_address: str | None
    user_agent: str | None
    request_method: str | None
    error_message: str | None
    bytes_in: int | None
    bytes_out: int | None
    failure_kind: str | None
    source: str


# -- builders: pure, from the analytics service's results ----------------------------------


def build_usage_stats(result: dict[str, Any]) -> UsageStats:
    return UsageStats.model_validate(result)


def build_token_usage(result: dict[str, Any]) -> TokenUsage:
    return TokenUsage.model_validate(result)


def build_route_usage(result: dict[str, Any]) -> RouteUsage:
    return RouteUsage.model_validate(result)


def build_usage_errors(result: dict[str, Any]) -> UsageErrors:
    return UsageErrors.model_validate(result)


def build_slow_calls(result: dict[str, Any]) -> SlowCalls:
    return SlowCalls.model_validate(result)


def build_idle_tokens(result: dict[str, Any]) -> IdleTokens:
    return IdleTokens.model_validate(result)


def build_usage_records(records: list[dict[str, Any]]) -> list[UsageRecord]:
    return [UsageRecord.model_validate(record) for record in records]
