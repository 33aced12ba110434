"""`tokenmanager ingest-key …`: keys for external gateways posting to /api/usage-log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from tokenmanager.access.actor import cli_actor
from tokenmanager.cli.context import run_on_services
from tokenmanager.cli.output import print_json, print_table, stdout

app = typer.Typer(help="Keys that let external gateways post usage records.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Which gateway will use it.")],
    as_json: JsonOption = False,
) -> None:
    """Create an ingest key and print it once."""
    created = run_on_services(lambda services: services.ingest_keys.create(cli_actor(), name=name))
    if as_json:
        print_json({**asdict(created.ingest_key), "key": created.key_secret})
        return
    stdout.print(f"Created ingest key {created.ingest_key.id} ({created.ingest_key.name}).")
    stdout.print("Key (shown only now):", style="bold")
    print(created.key_secret)


@app.command("list")
def list_keys(as_json: JsonOption = False) -> None:
    """List ingest keys (never the keys themselves)."""
    keys = run_on_services(lambda services: services.ingest_keys.list(cli_actor()))
    if as_json:
        print_json(keys)
        return
    print_table(
        f"{len(keys)} ingest key(s)",
        ("id", "name", "prefix", "created", "last used"),
        ([k.id, k.name, k.display_prefix, k.created_at, k.last_used] for k in keys),
    )


@app.command("delete")
def delete(key_id: Annotated[int, typer.Argument(help="Ingest key id.")]) -> None:
    """Delete an ingest key; posts with it are refused from then on."""
    run_on_services(lambda services: services.ingest_keys.delete(cli_actor(), key_id))
    stdout.print(f"Deleted ingest key {key_id}.")
