"""Fixtures for the gateway tests: the mock upstream on loopback, settings whose SSRF guard lets
routes reach it, a team, a token, the `/api/echo` route and a gateway served over real HTTP.

The gateway starts after the token and the echo route exist; routes added later are picked up
with `add_route`, which refreshes the gateway's directory instead of waiting for its poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services, build_gateway_app
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.routes.models import Route
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs
from tokenmanager.testing import make_settings, running_asgi_server, running_mock_upstream
from tokenmanager.tokens.models import IssuedToken

from .stage import (
    ECHO_PREFIX,
    ECHO_SCOPE,
    MOCK_PREFIX,
    OPENAI_SCOPE,
    TEAM_ID,
    UPSTREAM_CREDENTIAL,
    USAGE_DEADLINE_S,
    AddRoute,
    PlantedListener,
    UsageRows,
)


@pytest.fixture
def upstream_allow() -> str:
    """The SSRF allow-list: loopback, for the mock upstream. test_ssrf.py overrides it."""
    return "127.0.0.0/8"


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    """Extra settings; a test changes them with `@pytest.mark.parametrize("gateway_overrides",
    [{...}])`."""
    return {}


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, upstream_allow: str, gateway_overrides: dict[str, Any]
) -> Settings:
    return make_settings(
        tmp_path / "data", database_url, upstream_allow=upstream_allow, **gateway_overrides
    )


@pytest.fixture
async def mock_upstream() -> AsyncIterator[str]:
    """The mock upstream's base URL (http://127.0.0.1:<port>)."""
    async with running_mock_upstream() as url:
        yield url


@pytest.fixture
async def team(services: Services, admin: Actor) -> str:
    await services.teams.create(admin, team_id=TEAM_ID, name="Gateway team")
    return TEAM_ID


@pytest.fixture
async def token(services: Services, admin: Actor, team: str) -> IssuedToken:
    """A token allowed on the echo and the OpenAI routes; `token_secret` is its ntk_ secret."""
    return await services.tokens.issue(
        admin, name="gateway test", team_id=team, scopes=[ECHO_SCOPE, OPENAI_SCOPE]
    )


@pytest.fixture
async def echo_route(services: Services, admin: Actor, mock_upstream: str) -> Route:
    """`/api/echo` -> `<mock>/echo`, needing `echo:read`, injecting a bearer credential."""
    return await services.routes.create(
        admin,
        path_prefix=ECHO_PREFIX,
        upstream_url=f"{mock_upstream}/echo",
        required_scopes=[ECHO_SCOPE],
        upstream_auth_header="Authorization",
        upstream_auth_value=f"Bearer {UPSTREAM_CREDENTIAL}",
    )


@pytest.fixture
def gateway_app(settings: Settings) -> GatewayApp:
    """The gateway application (started by `gateway`); tests use its recorder and directory."""
    return build_gateway_app(settings)


@pytest.fixture
async def gateway(
    gateway_app: GatewayApp, echo_route: Route, token: IssuedToken
) -> AsyncIterator[str]:
    """The gateway served over loopback HTTP; yields its base URL."""
    async with running_asgi_server(gateway_app) as url:
        yield url


@pytest.fixture
async def client(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=10.0) as http_client:
        yield http_client


@pytest.fixture
def add_route(services: Services, admin: Actor, gateway_app: GatewayApp) -> AddRoute:
    """Create a route and make the gateway see it now (no waiting for the change poll)."""

    async def create(**fields: Any) -> Route:
        route = await services.routes.create(admin, **fields)
        await gateway_app.directory.refresh()
        return route

    return create


@pytest.fixture
async def mock_route(add_route: AddRoute, mock_upstream: str) -> Route:
    """`/api/mock` -> the mock upstream's root (`/api/mock/stream/5` -> `<mock>/stream/5`)."""
    return await add_route(
        path_prefix=MOCK_PREFIX, upstream_url=mock_upstream, required_scopes=[ECHO_SCOPE]
    )


@pytest.fixture
def usage_rows(services: Services, gateway_app: GatewayApp) -> UsageRows:
    """`await usage_rows(n)`: the usage rows (in request order) once at least n were written.

    An event is queued after its response is sent, so this flushes and reads until n rows are
    there or the deadline passes; it never hides extra rows.
    """

    async def read(expected: int) -> list[sa.Row[Any]]:
        deadline = time.monotonic() + USAGE_DEADLINE_S
        while True:
            await gateway_app.recorder.flush()
            async with services.database.read() as connection:
                # Not by id: the writer task may commit an older batch after flush() did.
                query = token_usage_logs.select().order_by(
                    token_usage_logs.c.used_at, token_usage_logs.c.id
                )
                rows = list(await connection.execute(query))
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.02)

    return read


@pytest.fixture
async def planted_listener() -> AsyncIterator[PlantedListener]:
    """A listener the gateway must never reach in the test using it."""
    listener = PlantedListener()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    async with server:
        yield listener
