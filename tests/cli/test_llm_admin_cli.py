"""`tokenmanager route … --provider`, `price …` and the budget options of `token` and `team`:
real subprocesses on SQLite and PostgreSQL, checking `--json` shapes and exit codes."""

from __future__ import annotations

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .conftest import Cli, message

TEAM = "backend-team"


@pytest.fixture
async def team(services: Services, admin: Actor) -> str:
    await services.teams.create(admin, team_id=TEAM, name="Backend")
    return TEAM


# Routes


def test_route_add_and_update_set_the_provider_and_the_stream_usage_switch(cli: Cli) -> None:
    added = cli.json(
        "route", "add", "/api/openai", "https://upstream.example/v1", "--provider", "openai",
    )  # fmt: skip
    assert (added["provider"], added["include_stream_usage"]) == ("openai", True)
    route_id = str(added["id"])

    updated = cli.json(
        "route", "update", route_id, "--provider", "anthropic", "--no-include-stream-usage"
    )
    assert (updated["provider"], updated["include_stream_usage"]) == ("anthropic", False)

    cleared = cli.json("route", "update", route_id, "--provider", "none")
    assert (cleared["provider"], cleared["include_stream_usage"]) == (None, False)
    assert cli.json("route", "show", route_id)["provider"] is None

    plain = cli.json("route", "add", "/api/plain", "https://upstream.example/p")
    assert (plain["provider"], plain["include_stream_usage"]) == (None, True)


def test_route_add_with_an_unknown_provider_exits_2(cli: Cli) -> None:
    result = cli("route", "add", "/api/x", "https://upstream.example/v1", "--provider", "gemini")

    assert result.returncode == 2
    assert "--provider" in message(result)
    assert cli.json("route", "list") == []
