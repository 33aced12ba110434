"""`/security`: the detectors' findings, filtered (default: open ones), each with its evidence
and a small chart of the observed figure against its baseline, acknowledged and resolved here
through the same service methods (and audit entries) as the API. Viewers see and act on only
their teams' tokens' findings, as the service decides."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from tokenmanager.access.actor import Actor
from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError, TokenManagerError
from tokenmanager.ids import MAX_ID
from tokenmanager.security.models import DetectorKind, Finding, FindingStatus, Severity
from tokenmanager.web.rendering import twin
from tokenmanager.web.session import Page, RendererDep, twin_url

router = APIRouter(include_in_schema=False)

PAGE_LIMIT = 100
TOKEN_NAMES_LIMIT = 500
ANY_STATUS = "all"
STATUS_CHOICES = (*(str(status) for status in FindingStatus), ANY_STATUS)

# What a finding's evidence chart compares: the first observed figure its evidence has, then
# the baseline figures it was compared with (see docs/security.md for each detector's evidence).
EVIDENCE_MEASURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("spent_percent", ("threshold_percent",)),  # budget_threshold (it has calls too)
    ("error_rate", ("baseline_error_rate",)),
    ("p95_ms", ("baseline_p95_ms",)),
    ("calls", ("baseline_median", "threshold")),
    ("count", ("threshold",)),
)
EVIDENCE_KEYS = tuple(
    key for observed, baseline in EVIDENCE_MEASURES for key in (observed, *baseline)
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def evidence_chart(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """The bars of a finding's evidence chart: [{"key", "value"}], observed first."""
    for observed, baseline in EVIDENCE_MEASURES:
        if _is_number(evidence.get(observed)):
            keys = (observed, *(key for key in baseline if _is_number(evidence.get(key))))
            return [{"key": key, "value": evidence[key]} for key in keys]
    return []


def _whole_number(params: Any, name: str, minimum: int, maximum: int) -> int | None:
    raw = params.get(name) or None
    if raw is None:
        return None
    try:
        number = int(raw)
    except ValueError:
        raise InvalidInputError(name, "not a number") from None
    if not minimum <= number <= maximum:
        raise InvalidInputError(name, f"must be between {minimum} and {maximum}")
    return number


def findings_filters(params: Any) -> dict[str, Any]:
    """The page's filters from its query; InvalidInputError (422) for malformed ones."""
    status = params.get("status") or str(FindingStatus.OPEN)
    if status not in STATUS_CHOICES:
        raise InvalidInputError("status", f"one of {', '.join(STATUS_CHOICES)}")
    kind = params.get("kind") or None
    if kind is not None and kind not in set(DetectorKind):
        raise InvalidInputError("kind", "not a detector kind")
    min_severity = params.get("min_severity") or None
    if min_severity is not None and min_severity not in set(Severity):
        raise InvalidInputError("min_severity", f"one of {', '.join(Severity)}")
    numbers = {
        name: _whole_number(params, name, minimum, maximum)
        for name, minimum, maximum in (("token_id", 1, MAX_ID), ("offset", 0, 1_000_000))
    }
    route_path = (params.get("route_path") or "").strip()[:255] or None
    return {
        "status": status,
        "kind": kind,
        "min_severity": min_severity,
        "token_id": numbers["token_id"],
        "route_path": route_path,
        "offset": numbers["offset"] or 0,
    }


async def security_data(services: Services, actor: Actor, params: Any) -> dict[str, Any]:
    filters = findings_filters(params)
    findings, total = await services.security.findings.list(
        actor,
        status=None if filters["status"] == ANY_STATUS else FindingStatus(filters["status"]),
        kind=DetectorKind(filters["kind"]) if filters["kind"] else None,
        min_severity=Severity(filters["min_severity"]) if filters["min_severity"] else None,
        token_id=filters["token_id"],
        route_path=filters["route_path"],
        limit=PAGE_LIMIT,
        offset=filters["offset"],
    )
    token_names = {
        token.id: token.name for token in await services.tokens.list(actor, limit=TOKEN_NAMES_LIMIT)
    }
    route_ids = {route.path_prefix: route.id for route in await services.routes.list(actor)}
    return {
        "filters": filters,
        "total": total,
        "limit": PAGE_LIMIT,
        "findings": [_finding_view(f, token_names, route_ids) for f in findings],
    }


def _finding_view(
    finding: Finding, token_names: dict[int, str], route_ids: dict[str, int]
) -> dict[str, Any]:
    return {
        **finding.as_json(),
        "token_name": token_names.get(finding.token_id) if finding.token_id else None,
        "route_id": route_ids.get(finding.route_path) if finding.route_path else None,
        "evidence_chart": evidence_chart(finding.evidence),
        "status_changed_by": finding.status_changed_by,
    }


@router.get("/security")
async def security_page(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    try:
        data = await security_data(services, page.actor, request.query_params)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    return renderer.render(
        request,
        page,
        "security.html",
        data=data,
        kinds=[str(kind) for kind in DetectorKind],
        severities=[str(severity) for severity in Severity],
        statuses=STATUS_CHOICES,
        chart_labels={
            "value": page.locale.text("evidence"),
            **{key: page.locale.text(f"evidence_{key}") for key in EVIDENCE_KEYS},
        },
        twin_url=twin_url("/security.json", request),
    )


@router.get("/security.json")
async def security_twin(request: Request, actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await security_data(services, actor, request.query_params))


def _back_to_list(form_value: Any) -> str:
    """The list the button was pressed on: only its query is taken, so never another site."""
    query = form_value if isinstance(form_value, str) else ""
    pairs = [(k, v) for k, v in parse_qsl(query[:2000]) if k != "csrf_token"]
    return "/security?" + urlencode(pairs) if pairs else "/security"


async def _change_status(
    finding_id: int,
    status: FindingStatus,
    request: Request,
    page: Page,
    services: ServicesDep,
    renderer: RendererDep,
) -> Response:
    """Acknowledge or resolve, then back to the list it was pressed on. As in the API, a viewer
    may act on their teams' findings only (the service answers 404 for any other)."""
    assert page.actor is not None
    form = await request.form()
    findings = services.security.findings
    try:
        if status == FindingStatus.ACKNOWLEDGED:
            await findings.acknowledge(page.actor, finding_id)
        else:
            await findings.resolve(page.actor, finding_id)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    return RedirectResponse(_back_to_list(form.get("back")), status_code=303)


@router.post("/security/findings/{finding_id:int}/acknowledge")
async def acknowledge_finding(
    finding_id: int, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    return await _change_status(
        finding_id, FindingStatus.ACKNOWLEDGED, request, page, services, renderer
    )


@router.post("/security/findings/{finding_id:int}/resolve")
async def resolve_finding(
    finding_id: int, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    return await _change_status(
        finding_id, FindingStatus.RESOLVED, request, page, services, renderer
    )
