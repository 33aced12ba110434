"""`tokenmanager team …`: create, list, show, update, delete."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenmanager.access.actor import cli_actor
from tokenmanager.cli.budgets import (
    BudgetPeriodOption,
    BudgetUsdOption,
    NoBudgetOption,
    budget_changes,
    budget_json,
)
from tokenmanager.cli.context import read_one, run_on_services
from tokenmanager.cli.output import (
    EXIT_INVALID,
    fail,
    print_json,
    print_record,
    print_table,
    stdout,
)

app = typer.Typer(help="Manage teams (owners of tokens).", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("create")
def create(
    team_id: Annotated[str, typer.Argument(help="Id like backend-team.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a team."""
    team = run_on_services(
        lambda services: services.teams.create(
            cli_actor(),
            team_id=team_id,
            name=name,
            description=description,
            budget_usd=budget_usd,
            budget_period=budget_period,
        )
    )
    if as_json:
        print_json(budget_json(team))
    else:
        stdout.print(f"Created team {team.id} ({team.name}).")


@app.command("list")
def list_teams(as_json: JsonOption = False) -> None:
    """List teams."""
    teams = run_on_services(lambda services: services.teams.list(cli_actor()))
    if as_json:
        print_json([budget_json(team) for team in teams])
        return
    print_table(
        f"{len(teams)} team(s)",
        ("id", "name", "description", "created"),
        ([t.id, t.name, t.description, t.created_at] for t in teams),
    )


@app.command("show")
def show(
    team_id: Annotated[str, typer.Argument(help="Team id.")], as_json: JsonOption = False
) -> None:
    """Show one team."""
    team = read_one("team", team_id, lambda services: services.teams.read(cli_actor(), team_id))
    if as_json:
        print_json(budget_json(team))
    else:
        print_record(f"team {team.id}", budget_json(team))


@app.command("update")
def update(
    team_id: Annotated[str, typer.Argument(help="Team id.")],
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    no_budget: NoBudgetOption = False,
    as_json: JsonOption = False,
) -> None:
    """Rename a team, change its description or its budget."""
    changes: dict[str, Any] = {
        k: v for k, v in (("name", name), ("description", description)) if v is not None
    }
    changes.update(budget_changes(budget_usd, budget_period, no_budget))
    if not changes:
        fail("nothing to change: give --name, --description or a budget option", EXIT_INVALID)

    team = run_on_services(lambda services: services.teams.update(cli_actor(), team_id, changes))
    if as_json:
        print_json(budget_json(team))
    else:
        stdout.print(f"Updated team {team.id}.")


@app.command("delete")
def delete(team_id: Annotated[str, typer.Argument(help="Team id.")]) -> None:
    """Delete a team that owns no tokens."""
    run_on_services(lambda services: services.teams.delete(cli_actor(), team_id))
    stdout.print(f"Deleted team {team_id}.")
