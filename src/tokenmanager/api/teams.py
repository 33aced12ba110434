"""`/api/teams`: admins create, change and delete teams; viewers list their own."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import Description, Name, StrictBody, UsdAmount, usd_text
from tokenmanager.budgets.models import BudgetPeriod
from tokenmanager.errors import NotFoundError
from tokenmanager.teams.models import Team

router = APIRouter(
    prefix="/api/teams", tags=["teams"], responses=error_responses(*SIGNED_IN_ERRORS)
)


RateLimit = Annotated[int, Field(gt=0, le=1_000_000)]


class TeamCreate(StrictBody):
    id: Annotated[str, Field(min_length=1, max_length=64, examples=["backend-team"])]
    name: Name
    description: Description = ""
    rate_limit_per_s: RateLimit | None = None
    rate_limit_per_min: RateLimit | None = None
    budget_usd: UsdAmount | None = Field(
        default=None, description="Spending budget per budget_period; null: none"
    )
    budget_period: BudgetPeriod | None = Field(
        default=None, description='"day" or "month" (calendar); "month" when left out'
    )


class TeamUpdate(StrictBody):
    name: Name | None = None
    description: Description | None = None
    rate_limit_per_s: RateLimit | None = None
    rate_limit_per_min: RateLimit | None = None
    budget_usd: UsdAmount | None = Field(
        default=None, description="New budget; null removes the budget"
    )
    budget_period: BudgetPeriod | None = None


class TeamOut(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime
    rate_limit_per_s: int | None
    rate_limit_per_min: int | None
    budget_usd: str | None = Field(description="Exact decimal in USD; null: no budget")
    budget_period: BudgetPeriod | None

    @classmethod
    def of(cls, team: Team) -> TeamOut:
        return cls(
            id=team.id,
            name=team.name,
            description=team.description,
            created_at=team.created_at,
            rate_limit_per_s=team.rate_limit_per_s,
            rate_limit_per_min=team.rate_limit_per_min,
            budget_usd=usd_text(team.budget_micro_usd),
            budget_period=BudgetPeriod(team.budget_period) if team.budget_period else None,
        )


@router.post("", status_code=201, response_model=TeamOut)
async def create_team(body: TeamCreate, actor: ActorDep, services: ServicesDep) -> TeamOut:
    team = await services.teams.create(
        actor,
        team_id=body.id,
        name=body.name,
        description=body.description,
        rate_limit_per_s=body.rate_limit_per_s,
        rate_limit_per_min=body.rate_limit_per_min,
        budget_usd=body.budget_usd,
        budget_period=body.budget_period,
    )
    return TeamOut.of(team)


@router.get("", response_model=list[TeamOut])
async def list_teams(actor: ActorDep, services: ServicesDep) -> list[TeamOut]:
    return [TeamOut.of(team) for team in await services.teams.list(actor)]


@router.get("/{team_id}", response_model=TeamOut)
async def read_team(team_id: str, actor: ActorDep, services: ServicesDep) -> TeamOut:
    team = await services.teams.read(actor, team_id)
    if team is None:
        raise NotFoundError("team not found")
    return TeamOut.of(team)


@router.patch("/{team_id}", response_model=TeamOut)
async def update_team(
    team_id: str, body: TeamUpdate, actor: ActorDep, services: ServicesDep
) -> TeamOut:
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "description"):
        if required in changes and changes[required] is None:
            changes.pop(required)  # null means "leave as is"; rate limits take null as "none"
    return TeamOut.of(await services.teams.update(actor, team_id, changes))


@router.delete("/{team_id}", status_code=204)
async def delete_team(team_id: str, actor: ActorDep, services: ServicesDep) -> Response:
    await services.teams.delete(actor, team_id)
    return Response(status_code=204)
