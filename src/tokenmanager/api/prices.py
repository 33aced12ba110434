"""`/api/prices`: the price per model that costs are computed with. Admins set and remove
prices; anyone signed in reads them. Money is an exact decimal string in USD per million
tokens; input takes a JSON number or such a string, with at most 6 decimals."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import StrictBody, UsdAmount, usd_text
from tokenmanager.errors import InvalidInputError
from tokenmanager.pricing.models import Price
from tokenmanager.pricing.money import format_micro_usd
from tokenmanager.pricing.service import checked_model

router = APIRouter(
    prefix="/api/prices", tags=["prices"], responses=error_responses(*SIGNED_IN_ERRORS)
)


UsdPerMtok = Annotated[UsdAmount, Field(description="USD per million tokens", examples=["2.5"])]


class PriceIn(StrictBody):
    input_usd_per_mtok: UsdPerMtok
    output_usd_per_mtok: UsdPerMtok
    cached_input_usd_per_mtok: UsdPerMtok | None = Field(
        default=None, description="Cached input tokens; left out, they cost the input price"
    )


class PriceOut(BaseModel):
    model: str
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    cached_input_usd_per_mtok: str | None
    source: str = Field(description='"admin", or the default table\'s date and origin')
    effective_from: datetime | None = Field(description="null for a shipped default")

    @classmethod
    def of(cls, price: Price) -> PriceOut:
        return cls(
            model=price.model,
            input_usd_per_mtok=format_micro_usd(price.input_micro_usd_per_mtok),
            output_usd_per_mtok=format_micro_usd(price.output_micro_usd_per_mtok),
            cached_input_usd_per_mtok=usd_text(price.cached_input_micro_usd_per_mtok),
            source=price.source,
            effective_from=price.effective_from,
        )


def _model_in(request: Request, model: str) -> str:
    """The path's model name, checked. The route pattern's `$` also matches before a final
    newline, so "gpt-4o%0A" would arrive as "gpt-4o": compare with the whole path."""
    if not request.scope["path"].endswith("/" + model):
        raise InvalidInputError("model", "must not contain whitespace or control characters")
    return checked_model(model)


@router.get("", response_model=list[PriceOut])
async def list_prices(actor: ActorDep, services: ServicesDep) -> list[PriceOut]:
    return [PriceOut.of(price) for price in await services.prices.list(actor)]


# `:path` because model names may contain "/" ("openai/gpt-4o"); ":" needs nothing special.
@router.put("/{model:path}", response_model=PriceOut)
async def set_price(
    model: str, body: PriceIn, request: Request, actor: ActorDep, services: ServicesDep
) -> PriceOut:
    """Set the model's price from now on; calls recorded before keep their cost."""
    price = await services.prices.set(
        actor,
        _model_in(request, model),
        input_usd_per_mtok=body.input_usd_per_mtok,
        output_usd_per_mtok=body.output_usd_per_mtok,
        cached_input_usd_per_mtok=body.cached_input_usd_per_mtok,
    )
    return PriceOut.of(price)


@router.delete("/{model:path}", status_code=204)
async def remove_price(
    model: str, request: Request, actor: ActorDep, services: ServicesDep
) -> Response:
    """From now on the model has no price (its calls cost null), even if it has a default."""
    await services.prices.remove(actor, _model_in(request, model))
    return Response(status_code=204)
