"""`/api/users` (admin only). Passwords are write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from tokenmanager.access.actor import Role
from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import ObjectId, StrictBody
from tokenmanager.errors import NotFoundError
from tokenmanager.users.models import User

router = APIRouter(
    prefix="/api/users", tags=["users"], responses=error_responses(*SIGNED_IN_ERRORS)
)

Password = Annotated[str, Field(min_length=1, max_length=1024)]
TeamIds = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=100)]


class UserCreate(StrictBody):
    username: Annotated[str, Field(min_length=1, max_length=100)]
    password: Password = Field(repr=False)
    role: Role
    team_ids: TeamIds = []


class UserUpdate(StrictBody):
    password: Password | None = Field(default=None, repr=False)
    role: Role | None = None
    team_ids: TeamIds | None = None


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    team_ids: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            role=user.role,
            team_ids=list(user.team_ids),
            created_at=user.created_at,
        )


@router.post("", status_code=201, response_model=UserOut)
async def create_user(body: UserCreate, actor: ActorDep, services: ServicesDep) -> UserOut:
    user = await services.users.create(
        actor,
        username=body.username,
        password=body.password,
        role=body.role,
        team_ids=body.team_ids,
    )
    return UserOut.of(user)


@router.get("", response_model=list[UserOut])
async def list_users(actor: ActorDep, services: ServicesDep) -> list[UserOut]:
    return [UserOut.of(user) for user in await services.users.list(actor)]


@router.get("/{user_id}", response_model=UserOut)
async def read_user(user_id: ObjectId, actor: ActorDep, services: ServicesDep) -> UserOut:
    user = await services.users.read(actor, user_id)
    if user is None:
        raise NotFoundError("user not found")
    return UserOut.of(user)


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(
    user_id: ObjectId, body: UserUpdate, actor: ActorDep, services: ServicesDep
) -> UserOut:
    changes = body.model_dump(exclude_unset=True)
    return UserOut.of(await services.users.update(actor, user_id, changes))


@router.delete("/{user_id}", status_code=204)
async def delete_user(user_id: ObjectId, actor: ActorDep, services: ServicesDep) -> Response:
    await services.users.delete(actor, user_id)
    return Response(status_code=204)
