"""`/api/routes`: admins manage routes, anyone signed in reads them. The upstream credential
value is write-only: reads show `upstream_auth_value_set` and a 4-character hint."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from tokenmanager.api.auth import ActorDep, ServicesDep
from tokenmanager.api.errors import SIGNED_IN_ERRORS, error_responses
from tokenmanager.api.schemas import Description, ObjectId, StrictBody
from tokenmanager.errors import NotFoundError
from tokenmanager.llm.models import Provider
from tokenmanager.routes.models import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Route,
)

router = APIRouter(
    prefix="/api/routes", tags=["routes"], responses=error_responses(*SIGNED_IN_ERRORS)
)

PathPrefix = Annotated[str, Field(min_length=1, max_length=255, examples=["/api/openai"])]
UpstreamUrl = Annotated[str, Field(min_length=1, max_length=2048)]
RequiredScopes = Annotated[list[Annotated[str, Field(max_length=130)]], Field(max_length=64)]
AuthPlace = Annotated[str, Field(min_length=1, max_length=100)]
AuthValue = Annotated[str, Field(min_length=1, max_length=8192)]
TimeoutS = Annotated[float, Field(gt=0, le=3600)]


class RouteCreate(StrictBody):
    path_prefix: PathPrefix
    upstream_url: UpstreamUrl
    required_scopes: RequiredScopes = []
    upstream_auth_header: AuthPlace | None = None
    upstream_auth_query_param: AuthPlace | None = None
    upstream_auth_value: AuthValue | None = Field(default=None, repr=False)
    connect_timeout_s: TimeoutS = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: TimeoutS = DEFAULT_READ_TIMEOUT_S
    total_timeout_s: TimeoutS = DEFAULT_TOTAL_TIMEOUT_S
    is_enabled: bool = True
    description: Description = ""
    provider: Provider | None = None
    include_stream_usage: bool = True


class RouteUpdate(StrictBody):
    path_prefix: PathPrefix | None = None
    upstream_url: UpstreamUrl | None = None
    required_scopes: RequiredScopes | None = None
    upstream_auth_header: AuthPlace | None = None
    upstream_auth_query_param: AuthPlace | None = None
    upstream_auth_value: AuthValue | None = Field(default=None, repr=False)
    connect_timeout_s: TimeoutS | None = None
    read_timeout_s: TimeoutS | None = None
    total_timeout_s: TimeoutS | None = None
    is_enabled: bool | None = None
    description: Description | None = None
    provider: Provider | None = None
    include_stream_usage: bool | None = None


class RouteOut(BaseModel):
    id: int
    path_prefix: str
    upstream_url: str
    required_scopes: list[str]
    upstream_auth_header: str | None
    upstream_auth_query_param: str | None
    upstream_auth_value_set: bool
    upstream_auth_value_last4: str | None
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float
    is_enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime
    provider: Provider | None = Field(
        description='"openai" (any OpenAI-compatible API), "anthropic", or null: not an LLM API'
    )
    include_stream_usage: bool = Field(
        description="Add stream_options.include_usage to OpenAI-compatible streaming requests "
        "that do not ask for usage, and strip the extra usage chunk from the reply"
    )

    @classmethod
    def of(cls, route: Route) -> RouteOut:
        return cls(
            id=route.id,
            path_prefix=route.path_prefix,
            upstream_url=route.upstream_url,
            required_scopes=list(route.required_scopes),
            upstream_auth_header=route.upstream_auth_header,
            upstream_auth_query_param=route.upstream_auth_query_param,
            upstream_auth_value_set=route.has_upstream_credential,
            upstream_auth_value_last4=route.upstream_auth_value_hint,
            connect_timeout_s=route.connect_timeout_s,
            read_timeout_s=route.read_timeout_s,
            total_timeout_s=route.total_timeout_s,
            is_enabled=route.is_enabled,
            description=route.description,
            created_at=route.created_at,
            updated_at=route.updated_at,
            provider=route.provider,
            include_stream_usage=route.include_stream_usage,
        )


@router.post("", status_code=201, response_model=RouteOut)
async def create_route(body: RouteCreate, actor: ActorDep, services: ServicesDep) -> RouteOut:
    return RouteOut.of(await services.routes.create(actor, **body.model_dump()))


@router.get("", response_model=list[RouteOut])
async def list_routes(actor: ActorDep, services: ServicesDep) -> list[RouteOut]:
    return [RouteOut.of(route) for route in await services.routes.list(actor)]


@router.get("/{route_id}", response_model=RouteOut)
async def read_route(route_id: ObjectId, actor: ActorDep, services: ServicesDep) -> RouteOut:
    route = await services.routes.read(actor, route_id)
    if route is None:
        raise NotFoundError("route not found")
    return RouteOut.of(route)


_NOT_NULLABLE = (
    "path_prefix",
    "upstream_url",
    "required_scopes",
    "connect_timeout_s",
    "read_timeout_s",
    "total_timeout_s",
    "is_enabled",
    "description",
    "include_stream_usage",
)


@router.patch("/{route_id}", response_model=RouteOut)
async def update_route(
    route_id: ObjectId, body: RouteUpdate, actor: ActorDep, services: ServicesDep
) -> RouteOut:
    """Partial update. `"upstream_auth_value": null` removes the credential; `"provider": null`
    makes the route a plain (non-LLM) route."""
    changes = body.model_dump(exclude_unset=True)
    for name in _NOT_NULLABLE:
        if name in changes and changes[name] is None:
            changes.pop(name)
    return RouteOut.of(await services.routes.update(actor, route_id, changes))


@router.delete("/{route_id}", status_code=204)
async def delete_route(route_id: ObjectId, actor: ActorDep, services: ServicesDep) -> Response:
    await services.routes.delete(actor, route_id)
    return Response(status_code=204)
