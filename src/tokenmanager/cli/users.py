"""`tokenmanager user …`: create (the first admin too), list, update, delete."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from tokenmanager.access.actor import Role, cli_actor
from tokenmanager.cli.context import run_on_services
from tokenmanager.cli.output import EXIT_INVALID, fail, print_json, print_table, stdout
from tokenmanager.composition import Services
from tokenmanager.users.models import User

app = typer.Typer(help="Manage dashboard and API users.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("--password-stdin: standard input was empty", EXIT_INVALID)
        return password
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password: pass --password-stdin", EXIT_INVALID)
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return str(password)


@app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[
        Role,
        typer.Option(
            help="admin (everything), member (its teams' tokens) or viewer (reads its teams)."
        ),
    ],
    team: Annotated[
        list[str] | None, typer.Option("--team", "-t", help="A team a viewer sees; repeat.")
    ] = None,
    password_stdin: PasswordStdin = False,
    as_json: JsonOption = False,
) -> None:
    """Create a user. There is no default account: this makes the first admin."""
    password = _read_password(password_stdin)

    user = run_on_services(
        lambda services: services.users.create(
            cli_actor(), username=username, password=password, role=role, team_ids=team or []
        )
    )
    if as_json:
        print_json(user)
    else:
        stdout.print(f"Created {user.role.value} {user.username} (id {user.id}).")


@app.command("list")
def list_users(as_json: JsonOption = False) -> None:
    """List users."""
    users = run_on_services(lambda services: services.users.list(cli_actor()))
    if as_json:
        print_json(users)
        return
    print_table(
        f"{len(users)} user(s)",
        ("id", "username", "role", "teams", "created"),
        ([u.id, u.username, u.role, u.team_ids, u.created_at] for u in users),
    )


async def _user_id(services: Any, username: str) -> int:
    from tokenmanager.errors import NotFoundError

    for user in await services.users.list(cli_actor()):
        if user.username == username:
            return int(user.id)
    raise NotFoundError(f"user {username} not found")


@app.command("update")
def update(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[Role | None, typer.Option(help="New role.")] = None,
    team: Annotated[
        list[str] | None, typer.Option("--team", "-t", help="Replace the teams; repeat.")
    ] = None,
    set_password: Annotated[
        bool, typer.Option("--set-password", help="Set a new password.")
    ] = False,
    password_stdin: PasswordStdin = False,
    as_json: JsonOption = False,
) -> None:
    """Change a user's role, teams or password (a new password ends their sessions)."""
    changes: dict[str, Any] = {}
    if role is not None:
        changes["role"] = role
    if team is not None:
        changes["team_ids"] = team
    if set_password or password_stdin:
        changes["password"] = _read_password(password_stdin)
    if not changes:
        fail("nothing to change: give --role, --team or --set-password", EXIT_INVALID)

    async def update_user(services: Services) -> User:
        return await services.users.update(cli_actor(), await _user_id(services, username), changes)

    user = run_on_services(update_user)
    if as_json:
        print_json(user)
    else:
        stdout.print(f"Updated user {user.username}.")


@app.command("delete")
def delete(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Delete a user (the last admin cannot be deleted)."""

    async def delete_user(services: Services) -> None:
        await services.users.delete(cli_actor(), await _user_id(services, username))

    run_on_services(delete_user)
    stdout.print(f"Deleted user {username}.")
