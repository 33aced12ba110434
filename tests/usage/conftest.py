"""Fixtures of the usage store tests."""

from __future__ import annotations

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.tokens.models import IssuedToken


@pytest.fixture
async def tokens_of_two_teams(services: Services, admin: Actor) -> list[IssuedToken]:
    issued = []
    for team in ("alpha", "beta"):
        await services.teams.create(admin, team_id=team, name=team)
        issued.append(
            await services.tokens.issue(admin, name=f"{team}-bot", team_id=team, scopes=["llm"])
        )
    return issued
