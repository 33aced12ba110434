"""`/tokens` and `/tokens/{id}`: the token list with call counts and states, issuing (the secret
is shown once, in the answer to the issue or rotate request, never on a page you can reload),
revoking and rotating; one token's usage. Changes go through the token service."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from tokenmanager.access.actor import Actor
from tokenmanager.analytics.windows import build_window
from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.schemas import ObjectId
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError, NotFoundError, TokenManagerError
from tokenmanager.pricing.money import format_micro_usd
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.web.rendering import PageContext, Renderer, twin
from tokenmanager.web.session import Page, RendererDep, twin_url
from tokenmanager.web.views import budget_view, token_display_state

router = APIRouter(include_in_schema=False)

LIST_LIMIT = 500
RECENT_CALLS = 100
USAGE_WINDOW = "30d"


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def tokens_data(services: Services, actor: Actor) -> dict[str, Any]:
    now = utcnow()
    window = build_window(now, window=USAGE_WINDOW)
    tokens = await services.tokens.list(actor, limit=LIST_LIMIT)
    calls = {
        entry["token_id"]: entry["usage_count"]
        for entry in await services.analytics.calls_by_token(actor, window)
        if entry["token_id"] is not None
    }
    teams = await services.teams.list(actor)
    budgeted = [team for team in teams if team.budget_micro_usd is not None]
    spend = await services.analytics.period_spend(
        [("team", team.id, team.budget_period or "month") for team in budgeted],
        now,
        services.settings.zone,
    )
    return {
        "window": {"since": window.since.isoformat(), "until": window.until.isoformat()},
        # Teams have no page of their own: their budgets are shown where tokens are issued.
        "team_budgets": [
            {
                "team_id": team.id,
                "name": team.name,
                "budget": budget_view(
                    team.budget_micro_usd,
                    team.budget_period,
                    *spend[("team", team.id, team.budget_period or "month")],
                ),
            }
            for team in budgeted
        ],
        "tokens": [
            {
                "id": token.id,
                "name": token.name,
                "team_id": token.team_id,
                "display_prefix": token.display_prefix,
                "scopes": list(token.scopes),
                "state": token_display_state(token, now),
                "created_at": token.created_at.isoformat(),
                "expires_at": token.expires_at.isoformat() if token.expires_at else None,
                "last_used": token.last_used.isoformat() if token.last_used else None,
                "call_count": calls.get(token.id, 0),
                "budget_usd": (
                    format_micro_usd(token.budget_micro_usd)
                    if token.budget_micro_usd is not None
                    else None
                ),
                "budget_period": token.budget_period
                if token.budget_micro_usd is not None
                else None,
            }
            for token in tokens
        ],
    }


async def _render_list(
    request: Request,
    page: PageContext,
    services: Services,
    renderer: Renderer,
    *,
    issued: IssuedToken | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    actor = page.actor
    assert actor is not None
    data = await tokens_data(services, actor)
    teams = await services.teams.list(actor)
    return renderer.render(
        request,
        page,
        "tokens.html",
        status_code=status_code,
        data=data,
        teams=teams,
        issued=issued,
        error=error,
        twin_url="/tokens.json",
    )


@router.get("/tokens")
async def tokens_page(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    return await _render_list(request, page, services, renderer)


@router.get("/tokens.json")
async def tokens_twin(actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await tokens_data(services, actor))


def _issue_fields(form: FormData) -> dict[str, Any]:
    """The issue form's fields as the token service takes them; InvalidInputError if unusable."""
    text = {name: str(form.get(name) or "").strip() for name in form}
    fields: dict[str, Any] = {
        "name": text.get("name", "")[:200],
        "team_id": text.get("team_id", "")[:64],
        "scopes": [scope.strip() for scope in text.get("scopes", "").split(",") if scope.strip()],
        "description": text.get("description", "")[:2000],
    }
    if not fields["name"]:
        raise InvalidInputError("name", "must not be empty")
    if not fields["team_id"]:
        raise InvalidInputError("team_id", "choose a team")
    expires = text.get("expires_at", "")
    if expires:
        try:
            expires_at = datetime.fromisoformat(expires)
        except ValueError:
            raise InvalidInputError("expires_at", "not a date (YYYY-MM-DD)") from None
        if len(expires) == 10:
            expires_at += timedelta(days=1)  # a date means until the end of that day
        fields["expires_at"] = expires_at
    return fields


@router.post("/tokens")
async def issue_token(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    """Issue a token. For htmx, only the panel with the secret is returned (swapped into the
    page), so reloading the page never shows the secret again."""
    assert page.actor is not None
    try:
        issued = await services.tokens.issue(page.actor, **_issue_fields(await request.form()))
    except TokenManagerError as exc:
        if _is_htmx(request):
            return renderer.render(
                request, page, "token_secret.html", status_code=422, error=exc.message
            )
        return await _render_list(
            request, page, services, renderer, error=exc.message, status_code=422
        )
    if _is_htmx(request):
        return renderer.render(request, page, "token_secret.html", issued=issued, error=None)
    return await _render_list(request, page, services, renderer, issued=issued)


@router.post("/tokens/{token_id:int}/revoke")
async def revoke_token(
    token_id: ObjectId, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    try:
        await services.tokens.revoke(page.actor, token_id)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    if _is_htmx(request):
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return RedirectResponse("/tokens", status_code=303)


@router.post("/tokens/{token_id:int}/rotate")
async def rotate_token(
    token_id: ObjectId, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    try:
        issued = await services.tokens.rotate(page.actor, token_id)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    if _is_htmx(request):
        return renderer.render(request, page, "token_secret.html", issued=issued, error=None)
    return await _render_list(request, page, services, renderer, issued=issued)


# -- /tokens/{id} --------------------------------------------------------------------------


async def token_data(services: Services, actor: Actor, token_id: int) -> dict[str, Any]:
    """One token's usage over the last 30 days; NotFoundError for a token the actor cannot see."""
    token = await services.tokens.read(actor, token_id)
    if token is None:
        raise NotFoundError("token not found")
    now = utcnow()
    usage = await services.analytics.token_usage(
        actor, token_id, build_window(now, window=USAGE_WINDOW), limit=RECENT_CALLS, offset=0
    )
    usage["token"].update(
        {
            "display_state": token_display_state(token, now),
            "scopes": list(token.scopes),
            "description": token.description,
            "created_at": token.created_at.isoformat(),
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        }
    )
    usage["budget"] = None
    if token.budget_micro_usd is not None:
        key = ("token", str(token.id), token.budget_period or "month")
        spend = await services.analytics.period_spend([key], now, services.settings.zone)
        usage["budget"] = budget_view(token.budget_micro_usd, token.budget_period, *spend[key])
    return usage


@router.get("/tokens/{token_id:int}")
async def token_page(
    token_id: ObjectId, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    try:
        data = await token_data(services, page.actor, token_id)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    return renderer.render(
        request,
        page,
        "token_detail.html",
        data=data,
        twin_url=twin_url(f"/tokens/{token_id}.json", request),
    )


@router.get("/tokens/{token_id:int}.json")
async def token_twin(token_id: ObjectId, actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await token_data(services, actor, token_id))
