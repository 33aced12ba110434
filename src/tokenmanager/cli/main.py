"""`tokenmanager`: the root command, `serve` and `migrate`; the nouns live in their own modules."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from tokenmanager import __version__
from tokenmanager.cli import ingest_keys, routes, teams, tokens, users
from tokenmanager.cli.output import EXIT_CONFIG, exit_code_for, fail, stdout
from tokenmanager.errors import ConfigurationError, TokenManagerError

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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address the control plane listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Control-plane port.")] = 8000,
    run_migrations: Annotated[
        bool, typer.Option("--migrate", help="Upgrade the schema first instead of refusing.")
    ] = False,
) -> None:
    """Run the control plane (admin API and, later, the dashboard)."""
    import uvicorn

    from tokenmanager.api.app import create_app
    from tokenmanager.composition import build_services
    from tokenmanager.settings import load_settings
    from tokenmanager.storage import migrate as migrations

    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        services = build_services(settings)
    except ConfigurationError as exc:
        fail(exc.message, EXIT_CONFIG)

    async def prepare() -> None:
        if run_migrations:
            await migrations.upgrade(services.database.engine)
        await migrations.ensure_at_head(services.database.engine)

    try:
        asyncio.run(prepare())
    except TokenManagerError as exc:
        fail(exc.message, exit_code_for(exc))
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", EXIT_CONFIG)
    _check_port_free(host, port)
    stdout.print(f"Token Manager control plane on http://{host}:{port} (API docs at /docs)")
    uvicorn.run(create_app(settings, services), host=host, port=port, log_level="warning")


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(
                f"cannot listen on {host}:{port}: {exc.strerror}; choose another with --port",
                EXIT_CONFIG,
            )


def main() -> None:
    app()
