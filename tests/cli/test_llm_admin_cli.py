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


# Prices


def test_price_set_list_and_remove(cli: Cli) -> None:
    price = cli.json(
        "price", "set", "openai/gpt-4o", "--input", "2.5", "--output", "10",
        "--cached-input", "1.25",
    )  # fmt: skip
    assert {k: price[k] for k in ("model", "source")} == {
        "model": "openai/gpt-4o",
        "source": "admin",
    }
    assert (
        price["input_usd_per_mtok"],
        price["output_usd_per_mtok"],
        price["cached_input_usd_per_mtok"],
    ) == ("2.5", "10", "1.25")

    listed = {p["model"]: p for p in cli.json("price", "list")}
    assert listed["openai/gpt-4o"] == price
    assert listed["gpt-4o"]["source"].startswith("default")
    table = cli("price", "list")
    assert table.returncode == 0, table.stderr
    assert "openai/gpt-4o" in table.stdout

    removed = cli("price", "remove", "gpt-4o")
    assert removed.returncode == 0, removed.stderr
    assert "gpt-4o" not in {p["model"] for p in cli.json("price", "list")}
    assert cli("price", "remove", "gpt-4o").returncode == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("m", "--input", "0.0000001", "--output", "1"), "input_usd_per_mtok"),
        (("m", "--input", "1", "--output", "-2"), "output_usd_per_mtok"),
        (("bad model", "--input", "1", "--output", "1"), "model"),
    ],
)
def test_price_set_with_bad_input_exits_2_naming_it(
    cli: Cli, args: tuple[str, ...], named: str
) -> None:
    result = cli("price", "set", *args)

    assert result.returncode == 2
    assert named in message(result)
    assert "m" not in {p["model"] for p in cli.json("price", "list")}


# Budgets


def test_token_issue_and_update_set_and_remove_a_budget(cli: Cli, team: str) -> None:
    issued = cli.json("token", "issue", "--name", "batch", "--team", team, "--budget-usd", "5")
    assert (issued["budget_usd"], issued["budget_period"]) == ("5", "month")
    assert "budget_micro_usd" not in issued
    token_id = str(issued["id"])

    updated = cli.json(
        "token", "update", token_id, "--budget-usd", "0.25", "--budget-period", "day"
    )
    assert (updated["budget_usd"], updated["budget_period"]) == ("0.25", "day")

    cleared = cli.json("token", "update", token_id, "--no-budget")
    assert (cleared["budget_usd"], cleared["budget_period"]) == (None, None)
    shown = cli.json("token", "show", token_id)
    assert (shown["budget_usd"], shown["budget_period"]) == (None, None)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--budget-usd", "0.0000001"), "budget_usd"),
        (("--budget-usd", "-3"), "budget_usd"),
        (("--budget-period", "day"), "budget_period"),
        (("--budget-usd", "1", "--budget-period", "week"), "--budget-period"),
    ],
)
def test_token_issue_with_a_bad_budget_exits_2(
    cli: Cli, team: str, args: tuple[str, ...], named: str
) -> None:
    result = cli("token", "issue", "--name", "batch", "--team", team, *args)

    assert result.returncode == 2
    assert named in message(result)
    assert cli.json("token", "list") == []


def test_team_create_and_update_set_and_remove_a_budget(cli: Cli) -> None:
    created = cli.json(
        "team", "create", TEAM, "--name", "Backend", "--budget-usd", "500",
        "--budget-period", "month",
    )  # fmt: skip
    assert (created["budget_usd"], created["budget_period"]) == ("500", "month")

    updated = cli.json("team", "update", TEAM, "--budget-period", "day")
    assert (updated["budget_usd"], updated["budget_period"]) == ("500", "day")
    assert cli.json("team", "list")[0]["budget_usd"] == "500"

    cleared = cli.json("team", "update", TEAM, "--no-budget")
    assert (cleared["budget_usd"], cleared["budget_period"]) == (None, None)

    conflicting = cli("team", "update", TEAM, "--no-budget", "--budget-usd", "3")
    assert conflicting.returncode == 2
    assert "--no-budget" in message(conflicting)
