"""Liveness, readiness (database reachable, schema at head), OpenAPI and security headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tokenmanager.api.app import create_app
from tokenmanager.composition import build_services
from tokenmanager.testing import PostgresDatabases, make_settings

Client = httpx.AsyncClient


@pytest.fixture
async def empty_database_url(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> AsyncIterator[str]:
    """A database of the current backend that was never migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert postgres_databases is not None
    url = await postgres_databases.create_database(migrated=False)
    yield url
    await postgres_databases.drop_database(url)


@pytest.fixture
async def unmigrated_client(tmp_path: Path, empty_database_url: str) -> AsyncIterator[Client]:
    services = build_services(make_settings(tmp_path / "data", empty_database_url))
    app = create_app(services.settings, services)
    try:
        async with Client(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            yield client
    finally:
        await services.close()


async def test_healthz_answers_without_sign_in(app_client: Client) -> None:
    answer = await app_client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_readyz_is_ready_on_a_migrated_database(app_client: Client) -> None:
    answer = await app_client.get("/readyz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ready"}


async def test_readyz_is_503_naming_the_migrate_command_on_an_unmigrated_database(
    unmigrated_client: Client,
) -> None:
    answer = await unmigrated_client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["status"] == "not_ready"
    assert "tokenmanager migrate" in answer.json()["reason"]


async def test_healthz_stays_alive_on_an_unmigrated_database(unmigrated_client: Client) -> None:
    assert (await unmigrated_client.get("/healthz")).status_code == 200


async def test_openapi_lists_the_token_paths(app_client: Client) -> None:
    answer = await app_client.get("/openapi.json")

    assert answer.status_code == 200
    paths = answer.json()["paths"]
    assert {
        "/api/tokens",
        "/api/tokens/{token_id}",
        "/api/tokens/{token_id}/revoke",
        "/api/tokens/{token_id}/rotate",
    } <= set(paths)
    assert {"get", "post"} <= set(paths["/api/tokens"])
    assert {"get", "patch", "delete"} <= set(paths["/api/tokens/{token_id}"])


async def test_docs_page_is_served(app_client: Client) -> None:
    answer = await app_client.get("/docs")

    assert answer.status_code == 200
    assert "text/html" in answer.headers["content-type"]


@pytest.mark.parametrize("path", ["/healthz", "/api/tokens", "/api/no-such-thing"])
async def test_answers_carry_security_headers(app_client: Client, path: str) -> None:
    answer = await app_client.get(path)

    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
