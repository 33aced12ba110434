"""`/prices`: the price per model that costs are computed with, where each comes from (a shipped
default or an admin) and since when; admins set and remove prices here (forms with the CSRF
token, through the price service). Everyone signed in reads them, as on the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from tokenmanager.access.actor import Actor
from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError, PermissionDeniedError, TokenManagerError
from tokenmanager.pricing.models import Price
from tokenmanager.pricing.money import format_micro_usd
from tokenmanager.web.rendering import PageContext, Renderer, twin
from tokenmanager.web.session import Page, RendererDep

router = APIRouter(include_in_schema=False)

PRICE_FIELDS = ("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok")


def price_view(price: Price) -> dict[str, Any]:
    """A price as the API shows it: exact decimal strings in USD per million tokens."""
    cached = price.cached_input_micro_usd_per_mtok
    return {
        "model": price.model,
        "input_usd_per_mtok": format_micro_usd(price.input_micro_usd_per_mtok),
        "output_usd_per_mtok": format_micro_usd(price.output_micro_usd_per_mtok),
        "cached_input_usd_per_mtok": format_micro_usd(cached) if cached is not None else None,
        "source": price.source,
        "effective_from": price.effective_from.isoformat() if price.effective_from else None,
    }


async def prices_data(services: Services, actor: Actor) -> dict[str, Any]:
    return {"prices": [price_view(price) for price in await services.prices.list(actor)]}


async def _render(
    request: Request,
    page: PageContext,
    services: Services,
    renderer: Renderer,
    *,
    error: str | None = None,
    submitted: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    assert page.actor is not None
    return renderer.render(
        request,
        page,
        "prices.html",
        status_code=status_code,
        data=await prices_data(services, page.actor),
        error=error,
        submitted=submitted or {},
        twin_url="/prices.json",
    )


@router.get("/prices")
async def prices_page(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    return await _render(request, page, services, renderer)


@router.get("/prices.json")
async def prices_twin(actor: ActorDep, services: ServicesDep) -> Response:
    return twin(await prices_data(services, actor))


@router.post("/prices")
async def set_price(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    """Set a model's price from now on; the amounts go to the service as the typed text, so
    they are parsed as exact decimals, never through a float."""
    assert page.actor is not None
    form = await request.form()
    text = {name: str(form.get(name) or "").strip()[:200] for name in ("model", *PRICE_FIELDS)}
    try:
        for name in ("model", "input_usd_per_mtok", "output_usd_per_mtok"):
            if not text[name]:
                raise InvalidInputError(name, "must not be empty")
        await services.prices.set(
            page.actor,
            text["model"],
            input_usd_per_mtok=text["input_usd_per_mtok"],
            output_usd_per_mtok=text["output_usd_per_mtok"],
            cached_input_usd_per_mtok=text["cached_input_usd_per_mtok"] or None,
        )
    except PermissionDeniedError as exc:
        return renderer.render_failure(request, page, exc)
    except TokenManagerError as exc:
        return await _render(
            request, page, services, renderer, error=exc.message, submitted=text, status_code=422
        )
    return RedirectResponse("/prices", status_code=303)


@router.post("/prices/remove")
async def remove_price(
    request: Request, page: Page, services: ServicesDep, renderer: RendererDep
) -> Response:
    """From now on the model has no price (its calls cost unknown), even if it has a default.
    The model travels in the form, not the path: model names may contain "/"."""
    assert page.actor is not None
    form = await request.form()
    try:
        await services.prices.remove(page.actor, str(form.get("model") or "")[:200])
    except TokenManagerError as exc:
        return renderer.render_failure(request, page, exc)
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return RedirectResponse("/prices", status_code=303)
