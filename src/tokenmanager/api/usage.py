"""`/api/usage/*`: the analytics API (the seed's endpoints and shapes, plus drill-downs and
export). Every figure comes from the analytics service; viewers see only their teams."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from tokenmanager.analytics.service import RAW_FIELDS
from tokenmanager.analytics.windows import Window, build_window
from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import ObjectId, ObjectIdQuery, Offset, UTCDatetime
from tokenmanager.api.usage_models import (
    IdleTokens,
    RouteUsage,
    SlowCalls,
    TokenUsage,
    UsageErrors,
    UsageRecord,
    UsageStats,
    build_idle_tokens,
    build_route_usage,
    build_slow_calls,
    build_token_usage,
    build_usage_errors,
    build_usage_records,
    build_usage_stats,
)
from tokenmanager.clock import utcnow
from tokenmanager.errors import InvalidInputError, NotFoundError

router = APIRouter(
    prefix="/api/usage", tags=["usage analytics"], responses=error_responses(*SIGNED_IN_ERRORS)
)

WindowName = Literal["24h", "7d", "30d"]
TeamQuery = Annotated[str | None, Query(max_length=64, description="Only this team's usage.")]
RouteQuery = Annotated[str | None, Query(max_length=255)]


def _window(window: WindowName | None, since: Any, until: Any, default: str = "24h") -> Window:
    try:
        return build_window(utcnow(), window=window, since=since, until=until, default=default)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise InvalidInputError(field, message) from None
    except OverflowError:  # a bound so near year 1 or 9999 that a whole hour passes the end
        raise InvalidInputError("until" if until is not None else "since", "out of range") from None


@router.get("/stats", response_model=UsageStats, response_model_exclude_unset=True)
async def usage_stats(
    actor: ActorDep,
    services: ServicesDep,
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    bucket: Literal["hour", "day"] = "hour",
    team_id: TeamQuery = None,
) -> UsageStats:
    """Overview, time series, top tokens and routes (default: the last 24 hours)."""
    return build_usage_stats(
        await services.analytics.stats(
            actor, _window(window, since, until), bucket=bucket, team_id=team_id
        )
    )


@router.get("/token/{token_id}", response_model=TokenUsage, response_model_exclude_unset=True)
async def token_usage(
    token_id: ObjectId,
    actor: ActorDep,
    services: ServicesDep,
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="recent_usage page size")] = 100,
    offset: Offset = 0,
) -> TokenUsage:
    """One token's usage (default window: 30 days; recent_usage: the latest calls)."""
    return build_token_usage(
        await services.analytics.token_usage(
            actor, token_id, _window(window, since, until, "30d"), limit=limit, offset=offset
        )
    )


@router.get("/route", response_model=RouteUsage, response_model_exclude_unset=True)
async def route_usage(
    actor: ActorDep,
    services: ServicesDep,
    route_path: Annotated[str, Query(min_length=1, max_length=255)],
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    team_id: TeamQuery = None,
) -> RouteUsage:
    """One route's usage (default window: 24 hours)."""
    return build_route_usage(
        await services.analytics.route_usage(
            actor, route_path, _window(window, since, until), team_id=team_id
        )
    )


@router.get("/costs")
async def usage_costs(
    actor: ActorDep,
    services: ServicesDep,
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    group_by: Literal["model", "team", "token", "route"] = "model",
    team_id: TeamQuery = None,
) -> dict[str, Any]:
    """LLM calls' tokens and cost by model, team (charged at call time), token or route, most
    expensive first, with totals (default window: 30 days). `cost_usd` is an exact decimal
    string; null when the calls had no price. Beside it, `unpriced_calls`, `estimated_calls`
    and `missing_calls` say how much of the figure is unknown or estimated."""
    return await services.analytics.costs(
        actor, _window(window, since, until, "30d"), group_by=group_by, team_id=team_id
    )


@router.get("/test-data", response_model=list[UsageRecord], response_model_exclude_unset=True)
async def test_data(actor: ActorDep, services: ServicesDep) -> list[UsageRecord]:
    """The 10 latest usage records. Only in dev mode (TOKENMANAGER_MODE=dev)."""
    if not services.settings.is_dev:
        raise NotFoundError("not found")
    return build_usage_records(await services.analytics.latest(actor, limit=10))


@router.get("/errors", response_model=UsageErrors, response_model_exclude_unset=True)
async def usage_errors(
    actor: ActorDep,
    services: ServicesDep,
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    team_id: TeamQuery = None,
    route_path: RouteQuery = None,
    token_id: ObjectIdQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UsageErrors:
    """Errors by status, by failure kind, top messages and the latest errors."""
    return build_usage_errors(await services.analytics.errors(
        actor, _window(window, since, until), team_id=team_id, route_path=route_path,
        token_id=token_id, limit=limit,
    ))  # fmt: skip


@router.get("/idle-tokens", response_model=IdleTokens, response_model_exclude_unset=True)
async def idle_tokens(
    actor: ActorDep,
    services: ServicesDep,
    days: Annotated[int, Query(ge=1, le=3650)] = 30,
    team_id: TeamQuery = None,
) -> IdleTokens:
    """Active tokens unused for `days` days or never used: candidates for revocation."""
    return build_idle_tokens(await services.analytics.idle_tokens(actor, days, team_id=team_id))


@router.get("/slow", response_model=SlowCalls, response_model_exclude_unset=True)
async def slow_calls(
    actor: ActorDep,
    services: ServicesDep,
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    team_id: TeamQuery = None,
    route_path: RouteQuery = None,
    token_id: ObjectIdQuery = None,
    min_response_time_ms: Annotated[int, Query(ge=0, le=86_400_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SlowCalls:
    """The slowest calls, slowest first."""
    return build_slow_calls(await services.analytics.slow_calls(
        actor, _window(window, since, until), team_id=team_id, route_path=route_path,
        token_id=token_id, min_response_time_ms=min_response_time_ms, limit=limit,
    ))  # fmt: skip


@router.get("/export", response_class=StreamingResponse)
async def export_usage(
    actor: ActorDep,
    services: ServicesDep,
    format: Literal["csv", "ndjson"] = "csv",
    window: WindowName | None = None,
    since: UTCDatetime | None = None,
    until: UTCDatetime | None = None,
    team_id: TeamQuery = None,
    route_path: RouteQuery = None,
    token_id: ObjectIdQuery = None,
) -> StreamingResponse:
    """Raw usage records, streamed row by row (default window: 24 hours)."""
    chosen = _window(window, since, until)
    rows = services.analytics.export_rows(
        actor, chosen, team_id=team_id, route_path=route_path, token_id=token_id
    )
    first = await anext(rows, None)  # permission errors surface before the 200 is sent
    encode = _csv_lines if format == "csv" else _ndjson_lines
    media_type = "text/csv" if format == "csv" else "application/x-ndjson"
    filename = f"usage-{chosen.since:%Y%m%dT%H}-{chosen.until:%Y%m%dT%H}.{format}"
    return StreamingResponse(
        encode(first, rows),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _csv_lines(
    first: dict[str, Any] | None, rows: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RAW_FIELDS)
    writer.writeheader()
    if first is not None:
        writer.writerow(first)
        async for row in rows:
            writer.writerow(row)
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


async def _ndjson_lines(
    first: dict[str, Any] | None, rows: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[str]:
    if first is None:
        return
    yield json.dumps(first) + "\n"
    async for row in rows:
        yield json.dumps(row) + "\n"
