"""`tokenmanager usage …` (export, prune) and `tokenmanager rollup rebuild`."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokenmanager.access.actor import cli_actor
from tokenmanager.analytics.service import RAW_FIELDS
from tokenmanager.analytics.windows import build_window
from tokenmanager.cli.context import open_services
from tokenmanager.cli.output import EXIT_INVALID, fail, run, stderr, stdout
from tokenmanager.clock import utcnow
from tokenmanager.storage import maintenance

app = typer.Typer(help="Export and prune usage records.", no_args_is_help=True)
rollup_app = typer.Typer(help="Maintain the usage rollups.", no_args_is_help=True)

SinceOption = Annotated[
    datetime | None, typer.Option(help="Start (ISO-8601, UTC if no zone); widened to the hour.")
]
UntilOption = Annotated[datetime | None, typer.Option(help="End (exclusive); widened to the hour.")]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )


def _utc(moment: datetime | None) -> datetime | None:
    from datetime import UTC

    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@app.command("export")
def export(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write, or - for standard output.")
    ],
    export_format: Annotated[str, typer.Option("--format", help="csv or ndjson.")] = "csv",
    window: Annotated[str | None, typer.Option(help="24h, 7d or 30d (default 24h).")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    team: Annotated[str | None, typer.Option(help="Only this team's usage.")] = None,
    route: Annotated[
        str | None, typer.Option(help="Only this route, by its path prefix (e.g. /api/openai).")
    ] = None,
    token: Annotated[int | None, typer.Option(help="Only this token id.")] = None,
) -> None:
    """Write raw usage records to a file, streamed, with a progress bar."""
    if export_format not in ("csv", "ndjson"):
        fail("--format must be csv or ndjson", EXIT_INVALID)
    try:
        chosen = build_window(utcnow(), window=window, since=_utc(since), until=_utc(until))
    except ValueError as exc:
        fail(f"--{exc}", EXIT_INVALID)

    # The CLI does one thing at a time: plain blocking writes are fine here.
    sink: IO[str] = sys.stdout if str(output) == "-" else _open_output(output)

    async def body() -> int:
        async with open_services() as services:
            async with services.database.read() as connection:
                total = await maintenance.count_raw_between(connection, chosen.since, chosen.until)
            writer = csv.DictWriter(sink, fieldnames=RAW_FIELDS) if export_format == "csv" else None
            if writer is not None:
                writer.writeheader()
            written = 0
            with _progress() as progress:
                task = progress.add_task("exporting", total=total)
                rows = services.analytics.export_rows(
                    cli_actor(), chosen, team_id=team, route_path=route, token_id=token
                )
                async for record in rows:
                    if writer is not None:
                        writer.writerow(record)
                    else:
                        sink.write(json.dumps(record) + "\n")
                    written += 1
                    if written % 1000 == 0:
                        progress.update(task, completed=written)
                progress.update(task, completed=written)
            return written

    try:
        written = run(body)
    finally:
        if sink is not sys.stdout:
            sink.close()
    span = f"{chosen.since:%Y-%m-%d %H:%M} to {chosen.until:%Y-%m-%d %H:%M} UTC"
    stderr.print(f"Wrote {written} record(s) from {span}.")


def _open_output(path: Path) -> IO[str]:
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}", EXIT_INVALID)


@app.command("prune")
def prune() -> None:
    """Delete usage rows past their retention now (the control plane also does it hourly)."""

    async def body() -> tuple[int, int]:
        async with open_services() as services:
            result = await services.upkeep.prune()
            return result.raw_rows, result.rollup_rows

    raw_rows, rollup_rows = run(body)
    stdout.print(f"Deleted {raw_rows} raw row(s) and {rollup_rows} rollup row(s).")


@rollup_app.command("rebuild")
def rebuild(since: SinceOption = None, until: UntilOption = None) -> None:
    """Recompute the hourly and daily rollups from the raw rows, one UTC day at a time
    (default: every day that still has raw rows)."""

    async def body() -> int:
        async with open_services() as services:
            days = await services.upkeep.days_to_rebuild(_utc(since), _utc(until))
            with _progress() as progress:
                task = progress.add_task("rebuilding days", total=len(days))
                return await services.upkeep.rebuild(
                    _utc(since), _utc(until), on_day=lambda day, count: progress.advance(task)
                )

    rows = run(body)
    stdout.print(f"Rebuilt the rollups from {rows} raw row(s).")
