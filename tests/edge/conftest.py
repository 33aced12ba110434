"""The edge stage: the control plane over HTTP, the Python gateway, the mock upstream and the
Worker under `tokenmanager edge dev`, all on loopback and sharing one SQLite database (the
Worker never touches the database: only the sync and the control plane do)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.api.app import create_app
from tokenmanager.composition import Services, build_gateway_app
from tokenmanager.routes.models import Route
from tokenmanager.settings import Settings
from tokenmanager.testing import (
    CuttableTcpProxy,
    make_settings,
    running_asgi_server,
    running_mock_upstream,
)
from tokenmanager.tokens.models import IssuedToken

from .stage import require_edge_runtime

TEAM_ID = "edge-team"
ECHO_SCOPE = "echo:read"
UPSTREAM_CREDENTIAL = "sk-upstream-edge-0123456789"
QUERY_CREDENTIAL = "query-secret-9876"


@pytest.fixture
def backend() -> str:
    """SQLite only: the Worker reads KV, and the sync's SQL is plain (storage/edge.py)."""
    return "sqlite"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    require_edge_runtime()
    return make_settings(
        tmp_path / "data",
        database_url,
        upstream_allow="127.0.0.0/8",
        usage_flush_interval_s=0.05,
    )


@pytest.fixture
async def mock_upstream() -> AsyncIterator[str]:
    async with running_mock_upstream() as url:
        yield url


@dataclass(frozen=True, slots=True)
class EdgeStage:
    token: IssuedToken
    narrow_token: IssuedToken
    echo_route: Route


@pytest.fixture
async def stage(services: Services, admin: Actor, mock_upstream: str) -> EdgeStage:
    """A team, a token with echo:read, one without, and the routes both gateways serve."""
    await services.teams.create(admin, team_id=TEAM_ID, name="Edge team")
    token = await services.tokens.issue(admin, name="edge", team_id=TEAM_ID, scopes=[ECHO_SCOPE])
    narrow = await services.tokens.issue(admin, name="narrow", team_id=TEAM_ID, scopes=["other"])
    echo_route = await services.routes.create(
        admin,
        path_prefix="/api/echo",
        upstream_url=f"{mock_upstream}/echo",
        required_scopes=[ECHO_SCOPE],
        upstream_auth_header="Authorization",
        upstream_auth_value=f"Bearer {UPSTREAM_CREDENTIAL}",
    )
    await services.routes.create(
        admin,
        path_prefix="/api/echo/deeper",
        upstream_url=f"{mock_upstream}/echo/deep?fixed=1",
        required_scopes=[],
        upstream_auth_query_param="key",
        upstream_auth_value=QUERY_CREDENTIAL,
    )
    await services.routes.create(
        admin, path_prefix="/api/mock", upstream_url=mock_upstream, required_scopes=[ECHO_SCOPE]
    )
    await services.routes.create(
        admin, path_prefix="/api/admin", upstream_url=mock_upstream, required_scopes=["admin"]
    )
    return EdgeStage(token=token, narrow_token=narrow, echo_route=echo_route)


@pytest.fixture
async def control_plane(settings: Settings) -> AsyncIterator[str]:
    """The control plane over loopback HTTP (its own services, its recorder running)."""
    async with running_asgi_server(create_app(settings)) as url:
        yield url


@pytest.fixture
async def control_plane_proxy(control_plane: str) -> AsyncIterator[CuttableTcpProxy]:
    """A proxy in front of the control plane that a test cuts to simulate an outage."""
    port = int(control_plane.rsplit(":", 1)[1])
    async with CuttableTcpProxy(port) as proxy:
        yield proxy


@pytest.fixture
async def python_gateway(settings: Settings, stage: EdgeStage) -> AsyncIterator[str]:
    async with running_asgi_server(build_gateway_app(settings)) as url:
        yield url
