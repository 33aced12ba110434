"""`/routes` and `/routes/{id}`: the route list with call counts, the add/edit form (the
upstream credential is write-only: the form never shows it, an empty field keeps it), and one
route's usage. Changes go through the route service (admins only)."""

from __future__ import annotations

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
from tokenmanager.errors import NotFoundError, PermissionDeniedError, TokenManagerError
from tokenmanager.routes.models import Route
from tokenmanager.web.pages import window_choice
from tokenmanager.web.rendering import PageContext, Renderer, twin
from tokenmanager.web.session import Page, RendererDep, twin_url

router = APIRouter(include_in_schema=False)

LIST_WINDOW = "30d"


def route_view(route: Route) -> dict[str, Any]:
    """What pages show of a route: whether a credential is set, never any part of it."""
    return {
        "id": route.id,
        "path_prefix": route.path_prefix,
        "upstream_url": route.upstream_url,
        "required_scopes": list(route.required_scopes),
        "upstream_auth_header": route.upstream_auth_header,
        "upstream_auth_query_param": route.upstream_auth_query_param,
        "has_upstream_credential": route.has_upstream_credential,
        "is_enabled": route.is_enabled,
        "description": route.description,
        "provider": route.provider.value if route.provider else None,
        "include_stream_usage": route.include_stream_usage,
        "created_at": route.created_at.isoformat(),
        "updated_at": route.updated_at.isoformat(),
    }


async def routes_data(services: Services, actor: Actor) -> dict[str, Any]:
    window = build_window(utcnow(), window=LIST_WINDOW)
    calls = {
        entry["route_path"]: entry["call_count"]
        for entry in await services.analytics.calls_by_route(actor, window)
    }
    return {
        "window": {"since": window.since.isoformat(), "until": window.until.isoformat()},
        "routes": [
            {**route_view(route), "call_count": calls.get(route.path_prefix, 0)}
            for route in await services.routes.list(actor)
        ],
    }


@router.get("/routes")
async def routes_page(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    data = await routes_data(services, page.actor)
    return renderer.render(request, page, "routes.html", data=data, twin_url="/routes.json")


@router.get("/routes.json")
async def routes_twin(actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await routes_data(services, actor))


# -- add / edit ----------------------------------------------------------------------------


def _route_fields(form: FormData, *, is_new: bool) -> dict[str, Any]:
    """The form's fields as the route service takes them. An empty credential field keeps the
    stored credential; the "remove" box deletes it."""
    text = {name: str(form.get(name) or "").strip() for name in form}
    fields: dict[str, Any] = {
        "path_prefix": text.get("path_prefix", "")[:255],
        "upstream_url": text.get("upstream_url", "")[:2048],
        "required_scopes": [
            scope.strip() for scope in text.get("required_scopes", "").split(",") if scope.strip()
        ],
        "upstream_auth_header": text.get("upstream_auth_header", "")[:100] or None,
        "description": text.get("description", "")[:2000],
        "is_enabled": form.get("is_enabled") == "on",
        # An unknown value reaches the service, which names the field in its 422.
        "provider": text.get("provider", "")[:16] or None,
        "include_stream_usage": form.get("include_stream_usage") == "on",
    }
    credential = str(form.get("upstream_auth_value") or "")[:8192]
    if form.get("remove_credential") == "on":
        fields["upstream_auth_value"] = None
    elif credential:
        fields["upstream_auth_value"] = credential
    elif is_new:
        fields["upstream_auth_header"] = None  # no credential, so nowhere to inject it
    return fields


def _render_form(
    request: Request,
    page: PageContext,
    renderer: Renderer,
    route: dict[str, Any] | None,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return renderer.render(
        request, page, "route_form.html", status_code=status_code, route=route, error=error
    )


def _submitted(form: FormData, route: dict[str, Any] | None) -> dict[str, Any]:
    """The form's values to show again after an error (never the credential)."""
    keep = ("path_prefix", "upstream_url", "upstream_auth_header", "description")
    values: dict[str, Any] = {name: str(form.get(name) or "") for name in keep}
    values["required_scopes"] = [str(form.get("required_scopes") or "")]
    values["is_enabled"] = form.get("is_enabled") == "on"
    values["provider"] = str(form.get("provider") or "") or None
    values["include_stream_usage"] = form.get("include_stream_usage") == "on"
    values["has_upstream_credential"] = bool(route and route["has_upstream_credential"])
    values["id"] = route["id"] if route else None
    return values


@router.get("/routes/new")
async def new_route_form(request: Request, page: Page, renderer: RendererDep) -> Response:
    assert page.actor is not None
    if not page.actor.is_admin:
        return renderer.render_failure(request, page, PermissionDeniedError("admins only"))
    return _render_form(request, page, renderer, None)


@router.post("/routes")
async def create_route(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    form = await request.form()
    try:
        route = await services.routes.create(page.actor, **_route_fields(form, is_new=True))
    except PermissionDeniedError as exc:
        return renderer.render_failure(request, page, exc)
    except TokenManagerError as exc:
        return _render_form(
            request, page, renderer, _submitted(form, None), error=exc.message, status_code=422
        )
    return RedirectResponse(f"/routes/{route.id}", status_code=303)


@router.get("/routes/{route_id:int}/edit")
async def edit_route_form(
    route_id: ObjectId, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    if not page.actor.is_admin:
        return renderer.render_failure(request, page, PermissionDeniedError("admins only"))
    route = await services.routes.read(page.actor, route_id)
    if route is None:
        return renderer.render_failure(request, page, NotFoundError("route not found"))
    return _render_form(request, page, renderer, route_view(route))


@router.post("/routes/{route_id:int}")
async def update_route(
    route_id: ObjectId, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    form = await request.form()
    route = await services.routes.read(page.actor, route_id)
    if route is None:
        return renderer.render_failure(request, page, NotFoundError("route not found"))
    try:
        await services.routes.update(page.actor, route_id, _route_fields(form, is_new=False))
    except PermissionDeniedError as exc:
        return renderer.render_failure(request, page, exc)
    except TokenManagerError as exc:
        return _render_form(
            request,
            page,
            renderer,
            _submitted(form, route_view(route)),
            error=exc.message,
            status_code=422,
        )
    return RedirectResponse(f"/routes/{route_id}", status_code=303)


# -- /routes/{id} --------------------------------------------------------------------------


async def route_data(
    services: Services, actor: Actor, route_id: int, params: Any
) -> dict[str, Any]:
    """One route's usage (viewers: their teams' calls only); NotFoundError for no such route."""
    route = await services.routes.read(actor, route_id)
    if route is None:
        raise NotFoundError("route not found")
    choice = window_choice(params, utcnow(), default="7d")
    team_id = params.get("team_id") or None
    usage = await services.analytics.route_usage(
        actor, route.path_prefix, choice.window, team_id=team_id
    )
    usage["route"] = route_view(route)
    usage["filters"] = {"team_id": team_id, **choice.filters}
    return usage


@router.get("/routes/{route_id:int}")
async def route_page(
    route_id: ObjectId, request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    assert page.actor is not None
    try:
        data = await route_data(services, page.actor, route_id, request.query_params)
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    teams = await services.teams.list(page.actor)
    return renderer.render(
        request,
        page,
        "route_detail.html",
        data=data,
        teams=teams,
        twin_url=twin_url(f"/routes/{route_id}.json", request),
    )


@router.get("/routes/{route_id:int}.json")
async def route_twin(
    route_id: ObjectId, request: Request, actor: ActorDep, services: ServicesDep
) -> Response:
    return twin(await route_data(services, actor, route_id, request.query_params))
