"""Fixtures for the API tests: settings whose SSRF guard lets routes name `UPSTREAM_HOST`
without a DNS lookup (plus any per-test overrides), and the two teams the viewer fixture also
uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.settings import Settings
from tokenmanager.testing import make_settings

UPSTREAM_HOST = "llm.upstream.test"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings one test changes: `@pytest.mark.parametrize("settings_overrides", [{...}])`."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(
        tmp_path / "data", database_url, upstream_allow=UPSTREAM_HOST, **settings_overrides
    )


@pytest.fixture
async def teams(services: Services, admin: Actor) -> tuple[str, str]:
    """Teams `team-a` and `team-b` (the viewer fixture finds and keeps them)."""
    for team_id in ("team-a", "team-b"):
        if await services.teams.read(admin, team_id) is None:
            await services.teams.create(admin, team_id=team_id, name=team_id.upper())
    return ("team-a", "team-b")


@pytest.fixture
async def ingest_key_secret(services: Services, admin: Actor) -> str:
    """The secret of a fresh ingest key (what an external gateway sends)."""
    created = await services.ingest_keys.create(admin, name="edge gateway")
    return created.key_secret
