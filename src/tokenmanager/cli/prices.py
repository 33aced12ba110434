"""`tokenmanager price …`: set, list and remove the price per model (USD per million tokens)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenmanager.access.actor import cli_actor
from tokenmanager.cli.context import run_on_services
from tokenmanager.cli.output import print_json, print_table, stdout
from tokenmanager.pricing.models import Price
from tokenmanager.pricing.money import format_micro_usd

app = typer.Typer(help="Manage model prices (USD per million tokens).", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ModelArgument = Annotated[
    str, typer.Argument(help="Model name as the upstream reports it, e.g. gpt-4o.")
]


def _price_json(price: Price) -> dict[str, Any]:
    cached = price.cached_input_micro_usd_per_mtok
    return {
        "model": price.model,
        "input_usd_per_mtok": format_micro_usd(price.input_micro_usd_per_mtok),
        "output_usd_per_mtok": format_micro_usd(price.output_micro_usd_per_mtok),
        "cached_input_usd_per_mtok": format_micro_usd(cached) if cached is not None else None,
        "source": price.source,
        "effective_from": price.effective_from.isoformat() if price.effective_from else None,
    }


@app.command("set")
def set_price(
    model: ModelArgument,
    input_usd: Annotated[
        str, typer.Option("--input", help="USD per million input tokens, e.g. 2.5.")
    ],
    output_usd: Annotated[
        str, typer.Option("--output", help="USD per million output tokens, e.g. 10.")
    ],
    cached_input_usd: Annotated[
        str | None,
        typer.Option(
            "--cached-input",
            help="USD per million cached input tokens (default: the input price).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set a model's price from now on (calls recorded before keep their cost)."""
    price = run_on_services(
        lambda services: services.prices.set(
            cli_actor(),
            model,
            input_usd_per_mtok=input_usd,
            output_usd_per_mtok=output_usd,
            cached_input_usd_per_mtok=cached_input_usd,
        )
    )
    if as_json:
        print_json(_price_json(price))
    else:
        stdout.print(
            f"Price of {price.model}: input {format_micro_usd(price.input_micro_usd_per_mtok)}, "
            f"output {format_micro_usd(price.output_micro_usd_per_mtok)} USD per million tokens."
        )


@app.command("list")
def list_prices(as_json: JsonOption = False) -> None:
    """List the prices in force: admin prices and the shipped defaults."""
    prices = run_on_services(lambda services: services.prices.list(cli_actor()))
    if as_json:
        print_json([_price_json(price) for price in prices])
        return
    print_table(
        f"{len(prices)} price(s), USD per million tokens",
        ("model", "input", "output", "cached input", "source", "since"),
        (
            [
                view["model"],
                view["input_usd_per_mtok"],
                view["output_usd_per_mtok"],
                view["cached_input_usd_per_mtok"],
                view["source"],
                price.effective_from,
            ]
            for price in prices
            for view in (_price_json(price),)
        ),
    )


@app.command("remove")
def remove(model: ModelArgument) -> None:
    """Remove a model's price (its default too): its calls cost null from now on."""
    run_on_services(lambda services: services.prices.remove(cli_actor(), model))
    stdout.print(f"Removed the price of {model}.")
