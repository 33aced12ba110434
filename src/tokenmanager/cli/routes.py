"""`tokenmanager route …`: add, list, show, update, remove."""

from __future__ import annotations

import sys
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated, Any

import typer

from tokenmanager.access.actor import cli_actor
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
from tokenmanager.routes.models import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Route,
)

app = typer.Typer(help="Map path prefixes to upstream APIs.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AuthValueStdin = Annotated[
    bool,
    typer.Option(
        "--auth-value-stdin",
        help="Read the upstream credential (e.g. 'Bearer sk-…') from standard input, "
        "so it stays out of the shell history.",
    ),
]


class ProviderChoice(StrEnum):
    """--provider's values; "none" stands for null (not an LLM API)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    NONE = "none"

    def as_provider(self) -> str | None:
        return None if self is ProviderChoice.NONE else self.value


ProviderOption = Annotated[
    ProviderChoice | None,
    typer.Option(
        help="The LLM API family whose usage the gateway reads: openai (any OpenAI-compatible "
        "API), anthropic, or none (not an LLM API).",
        case_sensitive=False,
    ),
]
StreamUsageOption = Annotated[
    bool | None,
    typer.Option(
        "--include-stream-usage/--no-include-stream-usage",
        help="Ask OpenAI-compatible streams to report their usage (default on).",
    ),
]


def _read_auth_value(from_stdin: bool) -> str | None:
    if not from_stdin:
        return None
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail("--auth-value-stdin: standard input was empty", EXIT_INVALID)
    return value


def _route_json(route: Route) -> dict[str, Any]:
    view = asdict(route)
    view["upstream_auth_value_set"] = route.has_upstream_credential
    view["upstream_auth_value_last4"] = view.pop("upstream_auth_value_hint")
    return view


def _print_route(route: Route, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(_route_json(route))
    else:
        stdout.print(f"{verb} route {route.id}: {route.path_prefix} -> {route.upstream_url}")


@app.command("add")
def add(
    path_prefix: Annotated[
        str, typer.Argument(help="Path prefix on the gateway, e.g. /api/openai.")
    ],
    upstream_url: Annotated[
        str, typer.Argument(help="Upstream base URL, e.g. https://api.openai.com/v1.")
    ],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="A required scope; repeat.")
    ] = None,
    auth_header: Annotated[
        str | None, typer.Option(help="Header to inject, e.g. Authorization.")
    ] = None,
    auth_query_param: Annotated[
        str | None, typer.Option(help="Query parameter to inject instead.")
    ] = None,
    auth_value_stdin: AuthValueStdin = False,
    connect_timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Seconds to connect to the upstream.")
    ] = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Seconds the upstream may stay silent.")
    ] = DEFAULT_READ_TIMEOUT_S,
    total_timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Seconds for the whole call.")
    ] = DEFAULT_TOTAL_TIMEOUT_S,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    provider: ProviderOption = None,
    include_stream_usage: StreamUsageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a route."""
    auth_value = _read_auth_value(auth_value_stdin)

    async def body() -> Route:
        async with open_services() as services:
            return await services.routes.create(
                cli_actor(),
                path_prefix=path_prefix,
                upstream_url=upstream_url,
                required_scopes=scope or [],
                upstream_auth_header=auth_header,
                upstream_auth_query_param=auth_query_param,
                upstream_auth_value=auth_value,
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                total_timeout_s=total_timeout_s,
                is_enabled=not disabled,
                description=description,
                provider=provider.as_provider() if provider else None,
                include_stream_usage=include_stream_usage is not False,
            )

    _print_route(run(body), as_json, "Added")


@app.command("list")
def list_routes(as_json: JsonOption = False) -> None:
    """List routes (credentials show only as set / not set)."""
    routes = run_on_services(lambda services: services.routes.list(cli_actor()))
    if as_json:
        print_json([_route_json(route) for route in routes])
        return
    print_table(
        f"{len(routes)} route(s)",
        ("id", "prefix", "upstream", "scopes", "credential", "provider", "enabled"),
        (
            [
                r.id,
                r.path_prefix,
                r.upstream_url,
                r.required_scopes,
                r.upstream_auth_value_hint or "—",
                r.provider,
                r.is_enabled,
            ]
            for r in routes
        ),
    )


@app.command("show")
def show(
    route_id: Annotated[int, typer.Argument(help="Route id.")], as_json: JsonOption = False
) -> None:
    """Show one route."""
    route = read_one(
        "route", route_id, lambda services: services.routes.read(cli_actor(), route_id)
    )
    if as_json:
        print_json(_route_json(route))
    else:
        print_record(f"route {route.id}", _route_json(route))


@app.command("update")
def update(
    route_id: Annotated[int, typer.Argument(help="Route id.")],
    path_prefix: Annotated[str | None, typer.Option(help="New path prefix.")] = None,
    upstream_url: Annotated[str | None, typer.Option(help="New upstream URL.")] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="Replace required scopes.")
    ] = None,
    clear_scopes: Annotated[bool, typer.Option("--clear-scopes", help="Require no scope.")] = False,
    auth_header: Annotated[str | None, typer.Option(help="Header to inject.")] = None,
    auth_query_param: Annotated[str | None, typer.Option(help="Query parameter to inject.")] = None,
    auth_value_stdin: AuthValueStdin = False,
    remove_auth: Annotated[
        bool, typer.Option("--remove-auth", help="Remove the credential.")
    ] = False,
    connect_timeout_s: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds to connect to the upstream.")
    ] = None,
    read_timeout_s: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds the upstream may stay silent.")
    ] = None,
    total_timeout_s: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds for the whole call.")
    ] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Switch on or off.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    provider: ProviderOption = None,
    include_stream_usage: StreamUsageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a route; options left out stay as they are."""
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("path_prefix", path_prefix),
            ("upstream_url", upstream_url),
            ("upstream_auth_header", auth_header),
            ("upstream_auth_query_param", auth_query_param),
            ("connect_timeout_s", connect_timeout_s),
            ("read_timeout_s", read_timeout_s),
            ("total_timeout_s", total_timeout_s),
            ("is_enabled", enabled),
            ("description", description),
            ("include_stream_usage", include_stream_usage),
        )
        if value is not None
    }
    if provider is not None:
        changes["provider"] = provider.as_provider()
    if scope is not None or clear_scopes:
        changes["required_scopes"] = [] if clear_scopes else scope
    if remove_auth:
        changes["upstream_auth_value"] = None
    elif auth_value_stdin:
        changes["upstream_auth_value"] = _read_auth_value(True)
    if not changes:
        fail("nothing to change: give at least one option (see --help)", EXIT_INVALID)

    async def body() -> Route:
        async with open_services() as services:
            return await services.routes.update(cli_actor(), route_id, changes)

    _print_route(run(body), as_json, "Updated")


@app.command("remove")
def remove(
    route_id: Annotated[int, typer.Argument(help="Route id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a route."""
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to remove without --yes when not run interactively", EXIT_INVALID)
        typer.confirm(f"Remove route {route_id}?", abort=True)

    run_on_services(lambda services: services.routes.delete(cli_actor(), route_id))
    stdout.print(f"Removed route {route_id}.")
