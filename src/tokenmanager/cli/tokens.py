"""`tokenmanager token …`: issue, list, show, update, revoke, rotate, delete, import."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
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
from tokenmanager.cli.context import open_services, read_one, run_on_services
from tokenmanager.cli.output import (
    EXIT_INVALID,
    fail,
    print_json,
    print_record,
    print_table,
    run,
    stdout,
)
from tokenmanager.clock import utcnow
from tokenmanager.tokens.models import IssuedToken, Token, TokenState

app = typer.Typer(help="Issue and manage API tokens (ntk_…).", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ScopeOption = Annotated[
    list[str] | None, typer.Option("--scope", "-s", help="A scope; repeat for more.")
]
ExpiresOption = Annotated[
    str | None,
    typer.Option(
        help="When it stops working: ISO-8601 (2026-12-31T00:00:00Z) or a duration (30d, 12h)."
    ),
]
PerSecondOption = Annotated[
    int | None, typer.Option(min=1, help="Requests per second this token may make (gateway).")
]
PerMinuteOption = Annotated[
    int | None, typer.Option(min=1, help="Requests per minute this token may make (gateway).")
]
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(raw: str | None) -> datetime | None:
    """A duration from now or an ISO-8601 time (naive means UTC)."""
    if raw is None:
        return None
    duration = _DURATION.match(raw.strip())
    if duration:
        return utcnow() + timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--expires-at {raw!r} is neither ISO-8601 nor a duration like 30d", EXIT_INVALID)
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def _token_row(token: Token) -> list[Any]:
    return [
        token.id,
        token.name,
        token.team_id,
        token.display_prefix or "(imported)",
        token.scopes,
        token.state_at(utcnow()),
        token.expires_at,
        token.last_used,
    ]


def _token_json(token: Token) -> dict[str, Any]:
    return {**budget_json(token), "state": token.state_at(utcnow()).value}


def _print_issued(issued: IssuedToken, as_json: bool, verb: str) -> None:
    if as_json:
        print_json({**_token_json(issued.token), "token": issued.token_secret})
        return
    token = issued.token
    stdout.print(f"{verb} token {token.id} ({token.name}) for team {token.team_id}.")
    stdout.print("Secret (shown only now, store it safely):", style="bold")
    # Plain print: Rich would wrap or style the secret and break copy-paste.
    print(issued.token_secret)


@app.command("issue")
def issue(
    name: Annotated[str, typer.Option(help="What the token is for.")],
    team: Annotated[str, typer.Option(help="Owning team id, e.g. backend-team.")],
    scope: ScopeOption = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    expires_at: ExpiresOption = None,
    rate_limit_per_s: PerSecondOption = None,
    rate_limit_per_min: PerMinuteOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a new token and print its secret once."""

    async def body() -> IssuedToken:
        async with open_services() as services:
            return await services.tokens.issue(
                cli_actor(),
                name=name,
                team_id=team,
                scopes=scope or [],
                description=description,
                expires_at=parse_expiry(expires_at),
                rate_limit_per_s=rate_limit_per_s,
                rate_limit_per_min=rate_limit_per_min,
                budget_usd=budget_usd,
                budget_period=budget_period,
            )

    _print_issued(run(body), as_json, "Issued")


@app.command("list")
def list_tokens(
    team: Annotated[str | None, typer.Option(help="Only this team's tokens.")] = None,
    state: Annotated[TokenState | None, typer.Option(help="active, expired or revoked.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    tokens = run_on_services(
        lambda services: services.tokens.list(cli_actor(), team_id=team, state=state, limit=100_000)
    )
    if as_json:
        print_json([_token_json(token) for token in tokens])
        return
    print_table(
        f"{len(tokens)} token(s)",
        ("id", "name", "team", "prefix", "scopes", "state", "expires", "last used"),
        (_token_row(token) for token in tokens),
    )


@app.command("show")
def show(
    token_id: Annotated[int, typer.Argument(help="Token id.")], as_json: JsonOption = False
) -> None:
    """Show one token."""
    token = read_one(
        "token", token_id, lambda services: services.tokens.read(cli_actor(), token_id)
    )
    if as_json:
        print_json(_token_json(token))
    else:
        print_record(f"token {token.id}", _token_json(token))


@app.command("update")
def update(
    token_id: Annotated[int, typer.Argument(help="Token id.")],
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="Replace the scopes; repeat.")
    ] = None,
    clear_scopes: Annotated[
        bool, typer.Option("--clear-scopes", help="Remove every scope.")
    ] = False,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    expires_at: ExpiresOption = None,
    never_expires: Annotated[
        bool, typer.Option("--never-expires", help="Remove the expiry.")
    ] = False,
    team: Annotated[str | None, typer.Option(help="Move to another team.")] = None,
    rate_limit_per_s: PerSecondOption = None,
    rate_limit_per_min: PerMinuteOption = None,
    no_rate_limit: Annotated[
        bool, typer.Option("--no-rate-limit", help="Remove the token's own rate limits.")
    ] = False,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    no_budget: NoBudgetOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change a token's name, scopes, description, expiry, team, rate limits or budget (never
    its secret)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if scope is not None or clear_scopes:
        changes["scopes"] = [] if clear_scopes else scope
    if description is not None:
        changes["description"] = description
    if never_expires:
        changes["expires_at"] = None
    elif expires_at is not None:
        changes["expires_at"] = parse_expiry(expires_at)
    if team is not None:
        changes["team_id"] = team
    if no_rate_limit:
        changes["rate_limit_per_s"] = changes["rate_limit_per_min"] = None
    if rate_limit_per_s is not None:
        changes["rate_limit_per_s"] = rate_limit_per_s
    if rate_limit_per_min is not None:
        changes["rate_limit_per_min"] = rate_limit_per_min
    changes.update(budget_changes(budget_usd, budget_period, no_budget))
    if not changes:
        fail("nothing to change: give at least one option (see --help)", EXIT_INVALID)

    token = run_on_services(lambda services: services.tokens.update(cli_actor(), token_id, changes))
    if as_json:
        print_json(_token_json(token))
    else:
        stdout.print(f"Updated token {token.id}.")


@app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="Token id.")], as_json: JsonOption = False
) -> None:
    """Revoke a token: it stops working at once (idempotent)."""
    token = run_on_services(lambda services: services.tokens.revoke(cli_actor(), token_id))
    if as_json:
        print_json(_token_json(token))
    else:
        stdout.print(f"Revoked token {token.id} ({token.name}).")


@app.command("rotate")
def rotate(
    token_id: Annotated[int, typer.Argument(help="Token id.")],
    grace_period_s: Annotated[
        int | None,
        typer.Option(min=0, help="How long the old secret keeps working (default 24 h)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Give a token a new secret; the old one works for a grace period."""

    async def body() -> IssuedToken:
        async with open_services() as services:
            return await services.tokens.rotate(cli_actor(), token_id, grace_s=grace_period_s)

    _print_issued(run(body), as_json, "Rotated")


@app.command("delete")
def delete(
    token_id: Annotated[int, typer.Argument(help="Token id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a token (its usage history stays)."""
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to delete without --yes when not run interactively", EXIT_INVALID)
        typer.confirm(f"Delete token {token_id}?", abort=True)

    run_on_services(lambda services: services.tokens.delete(cli_actor(), token_id))
    stdout.print(f"Deleted token {token_id}.")


@app.command("import")
def import_token(
    token_hash: Annotated[str, typer.Option(help="SHA-256 hex digest of the existing secret.")],
    name: Annotated[str, typer.Option(help="What the token is for.")],
    team: Annotated[str, typer.Option(help="Owning team id.")],
    scope: ScopeOption = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    expires_at: ExpiresOption = None,
    as_json: JsonOption = False,
) -> None:
    """Adopt a token of the original design by its hash, so its secret keeps working."""
    token = run_on_services(
        lambda services: services.tokens.import_hash(
            cli_actor(),
            token_hash=token_hash,
            name=name,
            team_id=team,
            scopes=scope or [],
            description=description,
            expires_at=parse_expiry(expires_at),
        )
    )
    if as_json:
        print_json(_token_json(token))
    else:
        stdout.print(f"Imported token {token.id} ({token.name}) for team {token.team_id}.")
