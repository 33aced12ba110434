"""Shared fixtures. Every test that touches storage runs on SQLite and, when
TOKENMANAGER_TEST_POSTGRES_URL is set (always in CI), on PostgreSQL too."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tokenmanager.access.actor import Actor, Role
from tokenmanager.api.app import create_app
from tokenmanager.composition import Services, build_services
from tokenmanager.settings import Settings
from tokenmanager.testing import (
    PostgresDatabases,
    build_sqlite_template,
    copy_sqlite_template,
    make_settings,
)

POSTGRES_URL = os.environ.get("TOKENMANAGER_TEST_POSTGRES_URL")
ADMIN_PASSWORD = "admin password 123"
VIEWER_PASSWORD = "viewer password 123"
MEMBER_PASSWORD = "member password 123"


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI") == "true" and not POSTGRES_URL:
        raise pytest.UsageError(
            "CI must set TOKENMANAGER_TEST_POSTGRES_URL: the suite runs on both"
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sqlite_template(tmp_path_factory.mktemp("template") / "template.db")


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    if not POSTGRES_URL:
        yield None
        return
    databases = PostgresDatabases(POSTGRES_URL)
    databases.create_template()
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not POSTGRES_URL:
        pytest.skip("set TOKENMANAGER_TEST_POSTGRES_URL to run on PostgreSQL")
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_databases: PostgresDatabases | None,
) -> AsyncIterator[str]:
    """A migrated, empty database of the current backend."""
    if backend == "sqlite":
        yield copy_sqlite_template(sqlite_template, tmp_path / "tm.db")
        return
    assert postgres_databases is not None
    url = await postgres_databases.create_database()
    yield url
    await postgres_databases.drop_database(url)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = build_services(settings)
    yield built
    await built.close()


@pytest.fixture
def admin() -> Actor:
    return Actor(name="test-admin", role=Role.ADMIN, client_ip="127.0.0.1")


@pytest.fixture
async def app_client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the control plane, not signed in."""
    app = create_app(settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    """Authorization headers for a user."""
    answer = await client.post("/api/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    client.cookies.clear()  # tests use the bearer header unless they test cookies
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture
async def admin_headers(
    services: Services, admin: Actor, app_client: httpx.AsyncClient
) -> dict[str, str]:
    await services.users.create(admin, username="alice", password=ADMIN_PASSWORD, role=Role.ADMIN)
    return await sign_in(app_client, "alice", ADMIN_PASSWORD)


@pytest.fixture
async def viewer_headers(
    services: Services, admin: Actor, app_client: httpx.AsyncClient
) -> dict[str, str]:
    """A viewer of team `team-a` (created here, with `team-b` beside it)."""
    for team_id in ("team-a", "team-b"):
        if await services.teams.read(admin, team_id) is None:
            await services.teams.create(admin, team_id=team_id, name=team_id.upper())
    await services.users.create(
        admin, username="victor", password=VIEWER_PASSWORD, role=Role.VIEWER, team_ids=["team-a"]
    )
    return await sign_in(app_client, "victor", VIEWER_PASSWORD)


@pytest.fixture
async def member_headers(
    services: Services, admin: Actor, app_client: httpx.AsyncClient
) -> dict[str, str]:
    """A member of team `team-a` (created here, with `team-b` beside it)."""
    for team_id in ("team-a", "team-b"):
        if await services.teams.read(admin, team_id) is None:
            await services.teams.create(admin, team_id=team_id, name=team_id.upper())
    await services.users.create(
        admin, username="mona", password=MEMBER_PASSWORD, role=Role.MEMBER, team_ids=["team-a"]
    )
    return await sign_in(app_client, "mona", MEMBER_PASSWORD)
