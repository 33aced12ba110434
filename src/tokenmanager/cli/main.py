"""`tokenmanager`: the root command, `serve` and `migrate`; the nouns live in their own modules."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tokenmanager import __version__
from tokenmanager.cli import (
    demo,
    edge,
    ingest_keys,
    prices,
    routes,
    security,
    servers,
    teams,
    tokens,
    usage,
    users,
)
from tokenmanager.cli.output import EXIT_CONFIG, exit_code_for, fail, stdout
from tokenmanager.errors import TokenManagerError

app = typer.Typer(
    name="tokenmanager",
    help="Token Manager: API token gateway and usage analytics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tokens.app, name="token")
app.add_typer(routes.app, name="route")
app.add_typer(teams.app, name="team")
app.add_typer(users.app, name="user")
app.add_typer(ingest_keys.app, name="ingest-key")
app.add_typer(prices.app, name="price")
app.add_typer(usage.app, name="usage")
app.add_typer(usage.rollup_app, name="rollup")
app.add_typer(security.app, name="security")
app.add_typer(edge.app, name="edge")
app.command()(servers.serve)
app.command()(servers.gateway)
app.command("mock-upstream")(servers.mock_upstream)
app.command()(demo.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tokenmanager {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Settings come from TOKENMANAGER_* variables and TOKENMANAGER_CONFIG (a TOML file)."""


@app.command()
def migrate() -> None:
    """Upgrade the database schema to this version (safe to run again)."""
    from tokenmanager.composition import build_services
    from tokenmanager.settings import load_settings
    from tokenmanager.storage import migrate as migrations

    async def body() -> str:
        services = build_services(load_settings())
        try:
            before = await migrations.current_revision(services.database.engine)
            await migrations.upgrade(services.database.engine)
            return f"database at revision {migrations.head_revision()} (was {before or 'empty'})"
        finally:
            await services.close()

    try:
        message = asyncio.run(body())
    except TokenManagerError as exc:
        fail(exc.message, exit_code_for(exc))
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", EXIT_CONFIG)
    stdout.print(message)


def main() -> None:
    app()
