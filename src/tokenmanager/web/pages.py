"""The overview pages: `/` (dashboard), `/usage-analytics` and `/audit`, each with its `.json`
twin. A page and its twin are built by the same function, so the charts draw what the twin
says; every figure comes from the analytics service, scoped to the actor's teams."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from tokenmanager.access.actor import Actor
from tokenmanager.analytics.windows import build_window
from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError, TokenManagerError
from tokenmanager.web.rendering import twin
from tokenmanager.web.session import Page, RendererDep, twin_url
from tokenmanager.web.views import (
    WindowChoice,
    live_success_rate,
    parse_window_choice,
    route_shares,
)

router = APIRouter(include_in_schema=False)

DASHBOARD_TOP = 3
COST_ROWS = 10  # rows per cost table on /usage-analytics (the API has them all)
COST_GROUPS = ("model", "team", "token")
LIVE_SAMPLE = 1000  # the newest calls the live success rate looks at
OPEN_FINDINGS_SHOWN = 5
AUDIT_PAGE = 100


def window_choice(params: Any, now: datetime, default: str = "24h") -> WindowChoice:
    """The time-range picker's window; InvalidInputError for bad parameters."""
    try:
        return parse_window_choice(now, params, default)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise InvalidInputError(field, message) from None
    except OverflowError:  # a date so near year 9999 that the window's end passes it
        raise InvalidInputError("until", "out of range") from None


# -- / -------------------------------------------------------------------------------------


async def dashboard_data(services: Services, actor: Actor) -> dict[str, Any]:
    now = utcnow()
    week = await services.analytics.stats(actor, build_window(now, window="7d"))
    day = await services.analytics.stats(actor, build_window(now, window="24h"))
    live = live_success_rate(await services.analytics.latest(actor, limit=LIVE_SAMPLE), now)
    data: dict[str, Any] = {
        "week": {
            "window": week["window"],
            "total_calls": week["overview"]["total_calls"],
            "top_tokens": week["top_tokens"][:DASHBOARD_TOP],
            "top_routes": week["top_routes"][:DASHBOARD_TOP],
        },
        "live": {"minutes": 5, "calls": live.calls, "success_rate": live.success_rate},
        "trend": {"window": day["window"], "hourly_usage": day["hourly_usage"]},
    }
    # The security slice is optional here: without it the dashboard has no findings card.
    security = getattr(services, "security", None)
    if security is not None:
        findings, total = await security.findings.list(
            actor, status="open", limit=OPEN_FINDINGS_SHOWN
        )
        data["security_findings"] = {
            "open_count": total,
            "latest": [_finding_view(finding) for finding in findings],
        }
    return data


def _finding_view(finding: Any) -> dict[str, Any]:
    """What the card shows of a finding (its evidence stays on the security API)."""
    return {
        "id": finding.id,
        "kind": finding.kind,
        "severity": finding.severity,
        "token_id": finding.token_id,
        "team_id": finding.team_id,
        "route_path": finding.route_path,
        "occurrences": finding.occurrences,
        "last_seen": finding.last_seen.isoformat(),
    }


@router.get("/")
async def dashboard(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    data = await dashboard_data(services, page.actor)
    return renderer.render(request, page, "dashboard.html", data=data, twin_url="/index.json")


@router.get("/index.json")
async def dashboard_twin(actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await dashboard_data(services, actor))


# -- /usage-analytics ----------------------------------------------------------------------


async def usage_analytics_data(services: Services, actor: Actor, params: Any) -> dict[str, Any]:
    choice = window_choice(params, utcnow())
    team_id = params.get("team_id") or None
    stats = await services.analytics.stats(
        actor, choice.window, bucket=choice.bucket, team_id=team_id
    )
    # The same service call /api/usage/costs answers with, once per grouping.
    costs = {}
    for group_by in COST_GROUPS:
        answer = await services.analytics.costs(
            actor, choice.window, group_by=group_by, team_id=team_id
        )
        costs[group_by] = {"rows": answer["rows"][:COST_ROWS], "totals": answer["totals"]}
    return {
        **stats,
        "costs": costs,
        "route_shares": route_shares(stats["top_routes"]),
        "filters": {"team_id": team_id, **choice.filters},
    }


@router.get("/usage-analytics")
async def usage_analytics(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    teams = await services.teams.list(page.actor)
    try:
        data = await usage_analytics_data(services, page.actor, request.query_params)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    return renderer.render(
        request,
        page,
        "usage_analytics.html",
        data=data,
        teams=teams,
        twin_url=twin_url("/usage-analytics.json", request),
    )


@router.get("/usage-analytics.json")
async def usage_analytics_twin(
    request: Request, actor: ActorDep, services: ServicesDep
) -> Response:
    return twin(await usage_analytics_data(services, actor, request.query_params))


# -- /audit --------------------------------------------------------------------------------

MAX_AUDIT_OFFSET = 1_000_000  # a bound keeps OFFSET a number the database takes
AUDIT_FILTERS = ("actor", "action", "target_type", "target_id", "since", "until")


async def audit_data(services: Services, actor: Actor, params: Any) -> dict[str, Any]:
    """Who did what to which object, when (the before/after records stay in the API: they
    carry hints such as a credential's last characters that pages do not show)."""
    filters = {name: (params.get(name) or "").strip()[:100] for name in AUDIT_FILTERS}
    bounds: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            bounds[name] = datetime.fromisoformat(filters[name]) if filters[name] else None
        except ValueError:
            raise InvalidInputError(name, "not a date (YYYY-MM-DD) or date-time") from None
    try:
        offset = int(params.get("offset") or 0)
    except ValueError:
        raise InvalidInputError("offset", "not a number") from None
    if not 0 <= offset <= MAX_AUDIT_OFFSET:
        raise InvalidInputError("offset", f"must be between 0 and {MAX_AUDIT_OFFSET}")
    entries = await services.audit.list(
        actor,
        actor_name=filters["actor"] or None,
        action=filters["action"] or None,
        target_type=filters["target_type"] or None,
        target_id=filters["target_id"] or None,
        since=bounds["since"],
        until=bounds["until"],
        limit=AUDIT_PAGE,
        offset=offset,
    )
    return {
        "filters": filters,
        "offset": offset,
        "limit": AUDIT_PAGE,
        "entries": [
            {
                "id": entry.id,
                "at": entry.at.isoformat(),
                "actor": entry.actor,
                "action": entry.action,
                "target_type": entry.target_type,
                "target_id": entry.target_id,
                "client_ip": entry.client_ip,
            }
            for entry in entries
        ],
    }


@router.get("/audit")
async def audit(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    try:
        data = await audit_data(services, page.actor, request.query_params)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    older = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "lang")]
    older.append(("offset", str(data["offset"] + data["limit"])))
    return renderer.render(
        request,
        page,
        "audit.html",
        data=data,
        older_url="/audit?" + urlencode(older),
        twin_url=twin_url("/audit.json", request),
    )


@router.get("/audit.json")
async def audit_twin(request: Request, actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await audit_data(services, actor, request.query_params))
