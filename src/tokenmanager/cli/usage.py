"""`tokenmanager usage …` (export, prune, reprice, generate) and `tokenmanager rollup rebuild`."""

from __future__ import annotations

import csv
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokenmanager.access.actor import cli_actor
from tokenmanager.analytics.service import RAW_FIELDS
from tokenmanager.analytics.windows import build_window
from tokenmanager.cli.context import open_services
from tokenmanager.cli.output import (
    EXIT_CONFIG,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_PERMISSION,
    EXIT_UNEXPECTED,
    fail,
    print_table,
    run,
    stderr,
    stdout,
)
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.security.evaluation import PLAN_KINDS, PLAN_MIN_SPAN, PlannedAnomaly
from tokenmanager.security.models import DetectorKind
from tokenmanager.storage import maintenance
from tokenmanager.storage import reprice as reprice_sql
from tokenmanager.storage.usage import insert_usage_events
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.synthetic import (
    Anomaly,
    TrafficPlan,
    count_events,
    draw_callers,
    draw_routes,
    generate_events,
    inject,
    rebatch,
)

app = typer.Typer(help="Export, prune and generate usage records.", no_args_is_help=True)
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
        return path.open("w", encoding="utf-8", newline="")
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


@app.command("reprice")
def reprice(
    since: Annotated[
        datetime, typer.Option(help="Start (ISO-8601, UTC if no zone): calls at or after it.")
    ],
    until: Annotated[datetime | None, typer.Option(help="End, exclusive (default: now).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Only calls of this model (as recorded).")
    ] = None,
) -> None:
    """Recompute the cost of recorded LLM calls at today's prices, and correct the rollups,
    cost figures and spend by the change, in chunks with a progress bar."""
    start, end = _utc(since), _utc(until) or utcnow()
    assert start is not None
    if end <= start:
        fail("--until must be after --since", EXIT_INVALID)

    async def body() -> reprice_sql.RepriceResult:
        async with open_services() as services:
            prices = await services.prices.current()  # one table for the whole run
            async with services.database.read() as connection:
                total = await reprice_sql.count_llm_calls(connection, start, end, model)
            with _progress() as progress:
                task = progress.add_task("repricing", total=total)
                return await reprice_sql.reprice(
                    services.database,
                    start,
                    end,
                    cost_for=prices.cost_for,
                    zone=services.settings.zone,
                    model=model,
                    on_chunk=lambda calls: progress.advance(task, calls),
                )

    result = run(body)
    stdout.print(f"Repriced {result.calls} LLM call(s); the cost of {result.changed} changed.")


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


# -- generate ----------------------------------------------------------------------------------

GENERATE_POST_BATCH = 1000  # records per POST /api/usage-log/batch (the default cap is 10000)
GENERATE_STORE_BATCH = 2000  # events per store transaction


@dataclass(slots=True)
class GeneratedTally:
    """What went by, counted as the events stream through (none is kept in memory)."""

    events: int = 0
    calls_by_route: Counter[str] = field(default_factory=Counter)
    errors_by_route: Counter[str] = field(default_factory=Counter)
    token_hashes: set[str] = field(default_factory=set)

    def count(self, batches: Iterable[list[UsageEvent]]) -> Iterator[list[UsageEvent]]:
        for batch in batches:
            for event in batch:
                route = event.route_path or ""
                self.calls_by_route[route] += 1
                if event.is_error:
                    self.errors_by_route[route] += 1
                if event.token_hash:  # not a made-up token of a planted credential-stuffing burst
                    self.token_hashes.add(event.token_hash)
            self.events += len(batch)
            yield batch

    @property
    def errors(self) -> int:
        return sum(self.errors_by_route.values())


async def write_events(
    services: Services, batches: Iterable[Sequence[UsageEvent]], on_written: Callable[[int], None]
) -> int:
    """Store events through the usage write path (raw rows, last_used, rollups and spend),
    `GENERATE_STORE_BATCH` per transaction; returns how many were new."""
    new = 0
    for batch in rebatch(batches, GENERATE_STORE_BATCH):
        async with services.database.write() as connection:
            new += await insert_usage_events(connection, batch, zone=services.settings.zone)
        on_written(len(batch))
    return new


def seed_record(event: UsageEvent) -> dict[str, Any]:
    """The event as an external gateway posts it (the seed's body, plus event_id so that a
    repeated post is stored once, and an LLM call's model and counts: the control plane
    prices it)."""
    llm: dict[str, Any] = {}
    if event.usage_source is not None:
        llm = {
            "model": event.model,
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "cached_prompt_tokens": event.cached_prompt_tokens,
            "reasoning_tokens": event.reasoning_tokens,
            "usage_source": event.usage_source,
        }
    return llm | {
        "event_id": event.event_id,
        "token_hash": event.token_hash,
        "route": event.route_path,
        "timestamp": int(event.used_at.timestamp() * 1000),
        "response_status": event.response_status,
        "response_time_ms": event.response_time_ms,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "request_method": event.request_method,
        "error_message": event.error_message,
    }


async def _post_events(
    base_url: str,
    ingest_key: str,
    batches: Iterable[Sequence[UsageEvent]],
    on_posted: Callable[[int], None],
) -> tuple[int, int, str | None]:
    """POST the events to `base_url`/api/usage-log/batch; (accepted, rejected, first problem)."""
    import aiohttp

    accepted = rejected = 0
    first_problem: str | None = None
    endpoint = base_url.rstrip("/") + "/api/usage-log/batch"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for batch in rebatch(batches, GENERATE_POST_BATCH):
            body = [seed_record(event) for event in batch]
            answer = await _post_batch(session, endpoint, ingest_key, body)
            accepted += answer["accepted"]
            rejected += answer["rejected"]
            if first_problem is None and answer["errors"]:
                first_problem = json.dumps(answer["errors"][0]["fields"])
            on_posted(len(batch))
    return accepted, rejected, first_problem


async def _post_batch(
    session: Any, endpoint: str, ingest_key: str, body: list[dict[str, Any]]
) -> dict[str, Any]:
    import asyncio

    import aiohttp

    for attempt in range(5):
        try:
            async with session.post(
                endpoint, json=body, headers={"X-Ingest-Key": ingest_key}
            ) as answer:
                if answer.status == 503 and attempt < 4:  # the instance's queue is full: wait
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                    continue
                if answer.status == 401:
                    fail(f"{endpoint} refused the ingest key (401)", EXIT_PERMISSION)
                if answer.status != 200:
                    detail = (await answer.text())[:200]
                    fail(f"{endpoint} answered {answer.status}: {detail}", EXIT_UNEXPECTED)
                result: dict[str, Any] = await answer.json()
                return result
        except aiohttp.ClientError as exc:
            fail(f"cannot post to {endpoint}: {exc}", EXIT_CONFIG)
    fail(f"{endpoint} kept answering 503 (its usage queue is full)", EXIT_UNEXPECTED)


def _read_ingest_key(from_stdin: bool) -> str:
    if from_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            fail("--ingest-key-stdin: standard input was empty", EXIT_INVALID)
        return key
    if not sys.stdin.isatty():
        fail("no terminal to ask for the ingest key: pass --ingest-key-stdin", EXIT_INVALID)
    return str(typer.prompt("Ingest key", hide_input=True))


def _generate_span(
    window: str | None, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """[start, end) from --window (ending now) or --since/--until (until defaults to now)."""
    from tokenmanager.analytics.windows import WINDOWS

    now = utcnow()
    if window is not None and (since is not None or until is not None):
        fail("give either --window or --since/--until, not both", EXIT_INVALID)
    end = _utc(until) or now
    if end > now:
        fail("--until must not be in the future", EXIT_INVALID)
    if since is None:
        span = WINDOWS.get(window or "24h")
        if span is None:
            fail(f"--window must be one of {', '.join(WINDOWS)}", EXIT_INVALID)
        return end - span, end
    start = _utc(since)
    assert start is not None
    if start >= end:
        fail("--since must be before --until", EXIT_INVALID)
    return start, end


async def _local_callers(
    services: Services, token_ids: list[int], token_hashes: list[str]
) -> list[tuple[str, int | None]]:
    """(hash, id) of the chosen tokens; every active token when none is chosen."""
    from tokenmanager.storage.tokens import read_token_hashes
    from tokenmanager.tokens.models import TokenState

    actor = cli_actor()
    if not token_ids and not token_hashes:
        tokens = await services.tokens.list(actor, state=TokenState.ACTIVE, limit=10_000)
        token_ids = [token.id for token in tokens]
        if not token_ids:
            fail("no active tokens: issue one, or pass --token-hash", EXIT_NOT_FOUND)
    chosen: list[tuple[str, int | None]] = []
    async with services.database.read() as connection:
        for token_id in token_ids:
            if await services.tokens.read(actor, token_id) is None:
                fail(f"token {token_id} not found", EXIT_NOT_FOUND)
            token_hash, _ = await read_token_hashes(connection, token_id)
            chosen.append((token_hash, token_id))
    return chosen + [(token_hash, None) for token_hash in token_hashes]


def _check_token_hashes(token_hashes: list[str]) -> list[str]:
    from tokenmanager.tokens.codec import is_token_hash

    for token_hash in token_hashes:
        if not is_token_hash(token_hash.lower()):
            fail(f"--token-hash {token_hash!r}: must be 64 hexadecimal characters", EXIT_INVALID)
    return [token_hash.lower() for token_hash in token_hashes]


def _build_generated_plan(
    callers: list[tuple[str, int | None]],
    route_paths: list[str],
    start: datetime,
    end: datetime,
    events: int,
    seed: int,
    anomalies: list[DetectorKind],
) -> TrafficPlan:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    unique_paths = list(dict.fromkeys(route_paths))
    return TrafficPlan(
        callers=draw_callers(callers, unique_paths, rng),
        routes=draw_routes(unique_paths, rng),
        start=start,
        end=end,
        events=events,
        seed=seed,
        # each kind on another token while there are enough of them
        injectors=tuple(PlannedAnomaly(kind, index) for index, kind in enumerate(anomalies)),
    )


def _check_anomalies(kinds: list[DetectorKind], start: datetime, end: datetime) -> None:
    unsupported = [str(kind) for kind in kinds if kind not in PLAN_KINDS]
    if unsupported:
        fail(
            f"--inject {', '.join(unsupported)}: cannot be planted in generated usage; choose "
            f"from {', '.join(PLAN_KINDS)}",
            EXIT_INVALID,
        )
    if kinds and end - start < PLAN_MIN_SPAN:
        fail(
            f"--inject needs at least {PLAN_MIN_SPAN.days} days of usage (the detectors learn a "
            "token's habits first): use --window 30d or a longer --since",
            EXIT_INVALID,
        )


@app.command("generate")
def generate(
    events: Annotated[
        int, typer.Option("--events", "-n", min=1, max=10_000_000, help="How many events.")
    ] = 1000,
    token: Annotated[
        list[int] | None, typer.Option("--token", help="A token id; repeat for more.")
    ] = None,
    token_hash: Annotated[
        list[str] | None,
        typer.Option("--token-hash", help="A token's SHA-256 (hex); repeat for more."),
    ] = None,
    route: Annotated[
        list[str] | None, typer.Option("--route", help="A route path prefix; repeat for more.")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="24h, 7d or 30d, ending now (default 24h).")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Start (ISO-8601, UTC if no zone).")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="End (exclusive; default now).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed: the same seed gives the same events.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Post to this running instance's /api/usage-log/batch instead."),
    ] = None,
    ingest_key_stdin: Annotated[
        bool, typer.Option("--ingest-key-stdin", help="Read the ingest key for --url from stdin.")
    ] = False,
    anomalies: Annotated[
        list[DetectorKind] | None,
        typer.Option(
            "--inject", help="Plant an anomaly the KIND detector should find; repeat for more."
        ),
    ] = None,
) -> None:
    """Generate synthetic usage (diurnal and weekday pattern, per-route latency, 1-3 % errors)
    and write it to the store, or post it to a running instance with an ingest key."""
    start, end = _generate_span(window, since, until)
    kinds = list(dict.fromkeys(anomalies or []))
    _check_anomalies(kinds, start, end)
    hashes = _check_token_hashes(token_hash or [])
    route_paths = list(route or [])
    chosen_seed = seed if seed is not None else random.randrange(2**32)  # noqa: S311
    ingest_key: str | None = None
    if url is not None:
        if not url.startswith(("http://", "https://")):
            fail("--url must start with http:// or https://", EXIT_INVALID)
        if token:
            fail("--token needs the store; with --url name tokens by --token-hash", EXIT_INVALID)
        if not hashes:
            fail("--url needs at least one --token-hash", EXIT_INVALID)
        if not route_paths:
            fail("--url needs at least one --route", EXIT_INVALID)
        ingest_key = _read_ingest_key(ingest_key_stdin)

    tally = GeneratedTally()
    planted: list[Anomaly] = []

    async def body() -> tuple[int, int, str | None]:
        if url is not None:
            assert ingest_key is not None
            plan = _build_generated_plan(
                [(h, None) for h in hashes], route_paths, start, end, events, chosen_seed, kinds
            )
            planted.extend(injection.anomaly for injection in inject(plan))
            with _progress() as progress:
                task = progress.add_task("posting", total=count_events(plan))
                return await _post_events(
                    url,
                    ingest_key,
                    tally.count(generate_events(plan)),
                    lambda n: progress.advance(task, n),
                )
        async with open_services() as services:
            callers = await _local_callers(services, list(token or []), hashes)
            if not route_paths:
                route_paths.extend(r.path_prefix for r in await services.routes.list(cli_actor()))
                if not route_paths:
                    fail("no routes: add one, or pass --route", EXIT_NOT_FOUND)
            plan = _build_generated_plan(
                callers, route_paths, start, end, events, chosen_seed, kinds
            )
            planted.extend(injection.anomaly for injection in inject(plan))
            with _progress() as progress:
                task = progress.add_task("writing", total=count_events(plan))
                batches = tally.count(generate_events(plan))
                new = await write_events(services, batches, lambda n: progress.advance(task, n))
            return new, 0, None

    started = time.perf_counter()
    stored, rejected, first_rejection = run(body)
    elapsed_s = time.perf_counter() - started
    rows = []
    for path, calls in sorted(tally.calls_by_route.items()):
        errors = tally.errors_by_route[path]
        rows.append((path, calls, errors, f"{100 * errors / calls:.1f} %"))
    print_table("Generated usage by route", ("route", "calls", "errors", "error rate"), rows)
    where = f"posted to {url}" if url else "written to the store"
    outcome = f"{stored} accepted, {rejected} rejected" if url else f"{stored} new"
    stdout.print(
        f"{tally.events} event(s) for {len(tally.token_hashes)} token(s) {where} in "
        f"{elapsed_s:.1f} s ({outcome}); {tally.errors} error(s) "
        f"({100 * tally.errors / max(1, tally.events):.1f} %); "
        f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; seed {chosen_seed}.",
        highlight=False,
    )
    for anomaly in planted:
        stdout.print(
            f"planted {anomaly.description}, {anomaly.start:%Y-%m-%d %H:%M} to "
            f"{anomaly.end:%Y-%m-%d %H:%M} UTC",
            highlight=False,
        )
    if first_rejection:
        stderr.print(f"first rejection: {first_rejection}", highlight=False)
