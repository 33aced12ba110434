"""Fixtures for the API tests: settings whose SSRF guard lets routes name `UPSTREAM_HOST`
without a DNS lookup, and the two teams the viewer fixture also uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.settings import Settings
from tokenmanager.testing import make_settings

UPSTREAM_HOST = "llm.upstream.test"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url, upstream_allow=UPSTREAM_HOST)


@pytest.fixture
async def teams(services: Services, admin: Actor) -> tuple[str, str]:
    """Teams `team-a` and `team-b` (the viewer fixture finds and keeps them)."""
    for team_id in ("team-a", "team-b"):
        if await services.teams.read(admin, team_id) is None:
            await services.teams.create(admin, team_id=team_id, name=team_id.upper())
    return ("team-a", "team-b")
