"""`/api/tokens`: the token lifecycle. The secret (`token`) appears only in the answers to
issue and rotate."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import (
    Description,
    Name,
    ObjectId,
    Offset,
    StrictBody,
    UsdAmount,
    UTCDatetime,
    usd_text,
)
from tokenmanager.budgets.models import BudgetPeriod
from tokenmanager.clock import utcnow
from tokenmanager.errors import NotFoundError
from tokenmanager.tokens.models import IssuedToken, Token, TokenState

router = APIRouter(
    prefix="/api/tokens", tags=["tokens"], responses=error_responses(*SIGNED_IN_ERRORS)
)

Scopes = Annotated[list[Annotated[str, Field(max_length=130)]], Field(max_length=64)]
Metadata = Annotated[dict[str, Any], Field(max_length=50)]
RateLimit = Annotated[int, Field(gt=0, le=1_000_000)]


class TokenCreate(StrictBody):
    name: Name
    team_id: Annotated[str, Field(min_length=1, max_length=64)]
    scopes: Scopes = []
    description: Description = ""
    metadata: Metadata = {}
    expires_at: UTCDatetime | None = None
    rate_limit_per_s: RateLimit | None = None
    rate_limit_per_min: RateLimit | None = None
    budget_usd: UsdAmount | None = Field(
        default=None, description="Spending budget per budget_period; null: none"
    )
    budget_period: BudgetPeriod | None = Field(
        default=None, description='"day" or "month" (calendar); "month" when left out'
    )


class TokenUpdate(StrictBody):
    name: Name | None = None
    team_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    scopes: Scopes | None = None
    description: Description | None = None
    metadata: Metadata | None = None
    expires_at: UTCDatetime | None = None
    rate_limit_per_s: RateLimit | None = None
    rate_limit_per_min: RateLimit | None = None
    budget_usd: UsdAmount | None = Field(
        default=None, description="New budget; null removes the budget"
    )
    budget_period: BudgetPeriod | None = None


class TokenRotate(StrictBody):
    grace_period_s: Annotated[int, Field(ge=0, le=30 * 24 * 3600)] | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    team_id: str
    display_prefix: str
    scopes: list[str]
    description: str
    metadata: dict[str, Any]
    state: TokenState
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used: datetime | None
    previous_secret_expires_at: datetime | None
    is_imported: bool
    rate_limit_per_s: int | None
    rate_limit_per_min: int | None
    budget_usd: str | None = Field(description="Exact decimal in USD; null: no budget")
    budget_period: BudgetPeriod | None

    @classmethod
    def of(cls, token: Token) -> TokenOut:
        now = utcnow()
        previous_expires = token.previous_hash_expires_at
        return cls(
            id=token.id,
            name=token.name,
            team_id=token.team_id,
            display_prefix=token.display_prefix,
            scopes=list(token.scopes),
            description=token.description,
            metadata=token.metadata,
            state=token.state_at(now),
            created_at=token.created_at,
            created_by=token.created_by,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used=token.last_used,
            previous_secret_expires_at=(
                previous_expires if previous_expires and previous_expires > now else None
            ),
            is_imported=token.is_imported,
            rate_limit_per_s=token.rate_limit_per_s,
            rate_limit_per_min=token.rate_limit_per_min,
            budget_usd=usd_text(token.budget_micro_usd),
            budget_period=BudgetPeriod(token.budget_period) if token.budget_period else None,
        )


class IssuedTokenOut(TokenOut):
    token: str = Field(
        description="The secret. Shown only in this answer; store it now.", repr=False
    )

    @classmethod
    def of_issued(cls, issued: IssuedToken) -> IssuedTokenOut:
        return cls(**TokenOut.of(issued.token).model_dump(), token=issued.token_secret)


@router.post("", status_code=201, response_model=IssuedTokenOut)
async def issue_token(body: TokenCreate, actor: ActorDep, services: ServicesDep) -> IssuedTokenOut:
    issued = await services.tokens.issue(
        actor,
        name=body.name,
        team_id=body.team_id,
        scopes=body.scopes,
        description=body.description,
        metadata=body.metadata,
        expires_at=body.expires_at,
        rate_limit_per_s=body.rate_limit_per_s,
        rate_limit_per_min=body.rate_limit_per_min,
        budget_usd=body.budget_usd,
        budget_period=body.budget_period,
    )
    return IssuedTokenOut.of_issued(issued)


@router.get("", response_model=list[TokenOut])
async def list_tokens(
    actor: ActorDep,
    services: ServicesDep,
    team_id: Annotated[str | None, Query(max_length=64)] = None,
    state: TokenState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[TokenOut]:
    tokens = await services.tokens.list(
        actor, team_id=team_id, state=state, limit=limit, offset=offset
    )
    return [TokenOut.of(token) for token in tokens]


@router.get("/{token_id}", response_model=TokenOut)
async def read_token(token_id: ObjectId, actor: ActorDep, services: ServicesDep) -> TokenOut:
    token = await services.tokens.read(actor, token_id)
    if token is None:
        raise NotFoundError("token not found")
    return TokenOut.of(token)


@router.patch("/{token_id}", response_model=TokenOut)
async def update_token(
    token_id: ObjectId, body: TokenUpdate, actor: ActorDep, services: ServicesDep
) -> TokenOut:
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "team_id", "scopes", "description"):
        if required in changes and changes[required] is None:
            changes.pop(required)  # null means "leave as is" for fields that cannot be empty
    return TokenOut.of(await services.tokens.update(actor, token_id, changes))


@router.post("/{token_id}/revoke", response_model=TokenOut)
async def revoke_token(token_id: ObjectId, actor: ActorDep, services: ServicesDep) -> TokenOut:
    return TokenOut.of(await services.tokens.revoke(actor, token_id))


@router.post("/{token_id}/rotate", response_model=IssuedTokenOut)
async def rotate_token(
    token_id: ObjectId, actor: ActorDep, services: ServicesDep, body: TokenRotate | None = None
) -> IssuedTokenOut:
    grace_s = body.grace_period_s if body else None
    return IssuedTokenOut.of_issued(await services.tokens.rotate(actor, token_id, grace_s=grace_s))


@router.delete("/{token_id}", status_code=204)
async def delete_token(token_id: ObjectId, actor: ActorDep, services: ServicesDep) -> Response:
    await services.tokens.delete(actor, token_id)
    return Response(status_code=204)
