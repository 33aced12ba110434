"""Usage ingestion and analytics benchmark on PostgreSQL: the product beside raw baselines, one run.

Method (every step in one process, one run, on a throw-away database it creates and drops,
unless --keep-database):

1. Data. 3 teams and ~200 tokens are created through the services (real ids and hashes), plus an
   admin user. N synthetic usage events are generated over the last 30 days, oldest first:
   token popularity Zipf-like, each token calling 1-4 of 20 routes, a diurnal and weekday
   pattern, lognormal latencies per route, 1-3 % errors per route of a few kinds (upstream 4xx
   and 5xx, gateway timeouts and resets), ~1 % of calls from unknown token hashes (external
   gateways, no token id). Deterministic (seeded).
2. Ingestion, on the first --sample events (the same rows for every path, each into an empty
   table, after a CHECKPOINT):
      raw COPY      one COPY of all sample rows into a scratch copy of token_usage_logs
                    (`CREATE TABLE … (LIKE token_usage_logs INCLUDING ALL)`: same columns, same
                    indexes), one transaction
      COPY xbatch   the same, one COPY and one transaction per 1000 rows (the recorder's batch)
      product       a real `UsageRecorder` from `build_recorder` (default batch size), writing
                    through `insert_usage_events` into the real table: one statement per batch
                    (column arrays, INSERT … SELECT FROM unnest ON CONFLICT, the hourly and
                    daily rollup deltas and tokens.last_used computed from the new rows). The
                    events are built before the clock starts and fed as fast as the queue takes
                    them. Measured twice: with one writer (one batch at a time; the tables are
                    emptied after it), then with the default TOKENMANAGER_USAGE_WRITERS (2
                    batches at a time, each its own transaction). The COPY paths are one
                    session each.
   Then the rest of the N events go through the same recorder (generation interleaved in the
   same process, so that figure is a floor), and the rollups are checked against the raw rows.
3. VACUUM ANALYZE of the usage tables (what autovacuum does on its own to an insert-only table;
   done explicitly so the figures do not depend on when it ran).
4. Queries. The control plane (`create_app` served by uvicorn on 127.0.0.1, in this process) with
   an admin signed in through /api/auth/login; sequential requests with aiohttp (keep-alive), a
   few warm-up requests each, then --requests timed ones, client time included. Busy tokens and
   routes are the top 5 by calls, taken in turn. Beside them the seed's raw-table queries, run
   with asyncpg against token_usage_logs in the same run (up to --requests runs each, at most
   ~60 s per query).

    .venv/bin/python bench/analytics_bench.py [--rows 10000000] [--sample 1000000]
                                              [--requests 60] [--out bench/results/analytics.md]
                                              [--keep-database | --reuse-database NAME]

With --reuse-database, steps 1-3 are skipped for the queried database (an earlier run's, kept
with --keep-database): ingestion (step 2 on the sample) runs in a fresh throw-away database, and
step 4 runs against the kept one with the clock (time-machine) set to its data's end.

Targets (issue 4): product ingestion >= 50 % of raw COPY rows/s; /api/usage/stats p95 <= 50 ms;
token and route endpoints p95 <= 100 ms. Needs PostgreSQL (--server, default
postgresql://postgres@127.0.0.1:5432, a role allowed to create databases).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import asyncpg  # noqa: E402

from tokenmanager.access.actor import Role, cli_actor  # noqa: E402
from tokenmanager.storage.usage import _EVENT_COLUMNS  # noqa: E402
from tokenmanager.tokens.codec import hash_token  # noqa: E402
from tokenmanager.usage.events import UsageEvent  # noqa: E402

DAYS = 30
TEAMS = (("backend-team", "Backend"), ("data-team", "Data"), ("research-team", "Research"))
TOKENS_PER_TEAM = (90, 70, 40)  # 200 tokens
UNKNOWN_HASHES = 8
UNKNOWN_SHARE = 0.01
ADMIN_USER = "bench-admin"
ADMIN_PASSWORD = "bench-Admin-passw0rd-long-enough"  # noqa: S105 - a throw-away database
# (path, median latency ms, lognormal sigma, popularity weight)
ROUTES = (
    ("/api/openai", 850, 0.55, 30),
    ("/api/anthropic", 1200, 0.5, 22),
    ("/api/embeddings", 90, 0.4, 18),
    ("/api/search", 140, 0.6, 12),
    ("/api/translate", 380, 0.45, 9),
    ("/api/moderation", 60, 0.35, 8),
    ("/api/vision", 1600, 0.5, 6),
    ("/api/speech", 2200, 0.45, 5),
    ("/api/rerank", 70, 0.4, 5),
    ("/api/summarize", 950, 0.5, 4),
    ("/api/classify", 45, 0.35, 4),
    ("/api/geocode", 110, 0.5, 3),
    ("/api/weather", 160, 0.55, 3),
    ("/api/payments", 320, 0.4, 2),
    ("/api/sms", 260, 0.6, 2),
    ("/api/email", 180, 0.5, 2),
    ("/api/storage", 75, 0.7, 2),
    ("/api/ocr", 1300, 0.5, 1.5),
    ("/api/maps", 210, 0.45, 1),
    ("/api/legacy-v1", 600, 0.8, 0.5),
)
# (status, failure_kind, error_message, weight, latency factor)
ERROR_KINDS = (
    (429, None, "rate limit exceeded", 4, 0.05),
    (500, None, "upstream returned 500 Internal Server Error", 2, 0.8),
    (400, None, "invalid request body", 2, 0.1),
    (503, None, "upstream overloaded", 1, 0.2),
    (502, "upstream_reset", "the upstream broke off the response", 1, 1.5),
    (504, "timeout", "the upstream did not answer in time", 1, 0.0),
)
USER_AGENTS = (
    "python-requests/2.32.3",
    "axios/1.7.2",
    "openai-python/1.40.0",
    "curl/8.5.0",
    "Go-http-client/2.0",
    "node-fetch/3.3.2",
)
TIMEOUT_MS = 60_000
TIMES = "\N{MULTIPLICATION SIGN}"


# -- data --------------------------------------------------------------------------------------


@dataclass
class Caller:
    token_hash: str
    token_id: int | None
    source: str
    routes: list[int]
    route_cum: list[float]
    ips: list[str]
    user_agent: str


@dataclass
class Population:
    callers: list[Caller]
    caller_cum: list[float]
    route_error_rate: list[float] = field(default_factory=list)


def build_population(tokens: list[tuple[int, str]], rng: random.Random) -> Population:
    """Callers (tokens, then unknown hashes) with Zipf-like weights and their route mixes."""
    route_weights = [r[3] for r in ROUTES]
    callers: list[Caller] = []
    weights: list[float] = []
    order = list(range(len(tokens)))
    rng.shuffle(order)  # popularity is not tied to creation order (or team)
    for rank, index in enumerate(order, start=1):
        token_id, token_hash = tokens[index]
        count = rng.choice((1, 1, 2, 2, 3, 4))
        chosen: list[int] = []
        while len(chosen) < count:
            pick = rng.choices(range(len(ROUTES)), weights=route_weights)[0]
            if pick not in chosen:
                chosen.append(pick)
        mix = [rng.uniform(0.2, 1.0) * route_weights[i] for i in chosen]
        callers.append(
            Caller(
                token_hash,
                token_id,
                "gateway",
                chosen,
                list(itertools.accumulate(mix)),
                [
                    f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                    for _ in range(rng.choice((1, 2, 3)))
                ],
                rng.choice(USER_AGENTS),
            )
        )
        weights.append(1.0 / rank**1.1)
    known_total = sum(weights)
    unknown_weight = known_total * UNKNOWN_SHARE / (1 - UNKNOWN_SHARE) / UNKNOWN_HASHES
    for _ in range(UNKNOWN_HASHES):
        routes = rng.sample(range(len(ROUTES)), 2)
        callers.append(
            Caller(
                f"{rng.getrandbits(256):064x}",
                None,
                "ingest",
                routes,
                [1.0, 2.0],
                [f"172.16.{rng.randrange(256)}.{rng.randrange(1, 255)}"],
                "ext-gateway/0.9",
            )
        )
        weights.append(unknown_weight)
    error_rates = [rng.uniform(0.01, 0.03) for _ in ROUTES]
    return Population(callers, list(itertools.accumulate(weights)), error_rates)


def hour_weight(moment: datetime) -> float:
    """Diurnal (peak ~14:00 UTC, trough ~02:00) times a weekday factor (weekends ~40 %)."""
    diurnal = 0.25 + 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * ((moment.hour - 2) % 24) / 24))
    return diurnal * (0.4 if moment.weekday() >= 5 else 1.0)


def hour_counts(rows: int, end: datetime) -> list[tuple[datetime, int]]:
    """Events per hour over the DAYS before `end` (the last hour partial), summing to rows."""
    first = (end - timedelta(days=DAYS)).replace(minute=0, second=0, microsecond=0) + timedelta(
        hours=1
    )
    hours: list[tuple[datetime, float]] = []
    start = first
    while start < end:
        span = min(1.0, (end - start).total_seconds() / 3600)
        hours.append((start, hour_weight(start) * span))
        start += timedelta(hours=1)
    total = sum(w for _, w in hours)
    exact = [rows * w / total for _, w in hours]
    counts = [int(x) for x in exact]
    for index in sorted(range(len(hours)), key=lambda i: counts[i] - exact[i])[
        : rows - sum(counts)
    ]:
        counts[index] += 1
    return [(start, count) for (start, _), count in zip(hours, counts, strict=True)]


def uuid7_at(moment_ms: int, rng: random.Random) -> str:
    value = (moment_ms & (2**48 - 1)) << 80 | rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def generate(
    rows: int, end: datetime, population: Population, seed: int
) -> Iterator[list[UsageEvent]]:
    """Events hour by hour, oldest first."""
    rng = random.Random(seed)
    callers = population.callers
    caller_cum = population.caller_cum
    error_cum = list(itertools.accumulate(kind[3] for kind in ERROR_KINDS))
    route_params = [(math.log(r[1]), r[2], r[0]) for r in ROUTES]
    for hour_start, count in hour_counts(rows, end):
        span_s = min(3600.0, (end - hour_start).total_seconds())
        offsets = sorted(rng.random() * span_s for _ in range(count))
        chosen = rng.choices(callers, cum_weights=caller_cum, k=count)
        base_ms = int(hour_start.timestamp() * 1000)
        batch: list[UsageEvent] = []
        for offset, caller in zip(offsets, chosen, strict=True):
            route = (
                caller.routes[0]
                if len(caller.routes) == 1
                else rng.choices(caller.routes, cum_weights=caller.route_cum)[0]
            )
            mu, sigma, path = route_params[route]
            latency = int(rng.lognormvariate(mu, sigma)) + 1
            status, kind, message = 200, None, None
            if rng.random() < population.route_error_rate[route]:
                status, kind, message, _, factor = rng.choices(ERROR_KINDS, cum_weights=error_cum)[
                    0
                ]
                latency = TIMEOUT_MS if kind == "timeout" else max(1, int(latency * factor))
            used_at = hour_start + timedelta(seconds=offset)
            batch.append(
                UsageEvent(
                    token_hash=caller.token_hash,
                    route_path=path,
                    used_at=used_at,
                    response_status=status,
                    response_time_ms=latency,
                    event_id=uuid7_at(base_ms + int(offset * 1000), rng),
                    token_id=caller.token_id,
                    ttfb_ms=latency // 3 if status == 200 else None,
                    ip_address=caller.ips[0] if len(caller.ips) == 1 else rng.choice(caller.ips),
                    user_agent=caller.user_agent,
                    request_method="POST" if rng.random() < 0.85 else "GET",
                    error_message=message,
                    bytes_in=int(rng.lognormvariate(7.0, 0.8)),
                    bytes_out=int(rng.lognormvariate(8.0, 1.0)) if status == 200 else 120,
                    failure_kind=kind,
                    source=caller.source,
                )
            )
        yield batch


def copy_record(event: UsageEvent) -> tuple[Any, ...]:
    """The row as the product's staging COPY sends it."""
    return tuple(
        event.used_at.astimezone(UTC).replace(tzinfo=None)
        if name == "used_at"
        else getattr(event, name)
        for name in _EVENT_COLUMNS
    )


# -- measuring ---------------------------------------------------------------------------------


def source_tree() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"`{commit}`" + (f" plus uncommitted changes to {', '.join(changed)}" if changed else "")


def quantile(values: list[float], fraction: float) -> float:
    """Nearest-rank quantile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Timing:
    name: str
    samples_ms: list[float]
    target_ms: float | None = None
    note: str = ""

    @property
    def p50(self) -> float:
        return quantile(self.samples_ms, 0.50)

    @property
    def p95(self) -> float:
        return quantile(self.samples_ms, 0.95)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def admin_connect(server: str) -> asyncpg.Connection:
    return await asyncpg.connect(server.rstrip("/") + "/postgres")


async def checkpoint(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def copy_baselines(url: str, sample: list[UsageEvent], batch_size: int) -> dict[str, float]:
    """Raw COPY rows/s into scratch copies of token_usage_logs: one COPY, and one per batch."""
    records = [copy_record(event) for event in sample]
    results: dict[str, float] = {}
    connection = await asyncpg.connect(url)
    try:
        for name, per in (
            ("raw COPY (one COPY, one transaction)", len(records)),
            (f"raw COPY {TIMES}{batch_size} (one transaction each)", batch_size),
        ):
            await connection.execute("DROP TABLE IF EXISTS bench_copy_scratch")
            await connection.execute(
                "CREATE TABLE bench_copy_scratch (LIKE token_usage_logs INCLUDING ALL)"
            )
            await connection.execute("CHECKPOINT")
            started = time.perf_counter()
            for start in range(0, len(records), per):
                async with connection.transaction():
                    await connection.copy_records_to_table(
                        "bench_copy_scratch",
                        columns=_EVENT_COLUMNS,
                        records=records[start : start + per],
                    )
            elapsed = time.perf_counter() - started
            stored = await connection.fetchval("SELECT count(*) FROM bench_copy_scratch")
            assert stored == len(records), (stored, len(records))
            results[name] = len(records) / elapsed
            log(f"{name}: {len(records)} rows in {elapsed:.1f} s = {results[name]:,.0f} rows/s")
        await connection.execute("DROP TABLE bench_copy_scratch")
    finally:
        await connection.close()
    return results


async def feed(recorder: Any, events: Any, queue_size: int) -> int:
    """Record every event, waiting (not dropping) while the recorder's queue is nearly full."""
    high = max(1, queue_size - 2000)
    low = max(1, queue_size // 2)
    fed = 0
    for event in events:
        if recorder.queue_depth >= high:
            while recorder.queue_depth >= low:  # noqa: ASYNC110 - polls the recorder's queue
                await asyncio.sleep(0.002)
        if not recorder.record(event):
            raise RuntimeError("the recorder dropped an event")
        fed += 1
    return fed


async def wait_written(recorder: Any, count: int) -> None:
    while recorder.stats.written < count:
        if recorder.stats.spooled or recorder.stats.store_failures:
            raise RuntimeError(f"the store failed during the load: {recorder.stats}")
        await asyncio.sleep(0.005)


# -- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    run_started = time.monotonic()
    phases: dict[str, float] = {}
    machine = {
        "nproc": str(len(os.sched_getaffinity(0))),  # what `nproc` prints
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    server = args.server.rstrip("/")
    admin = await admin_connect(server)
    machine["postgres"] = (await admin.fetchval("SELECT version()")).split(" on ")[0]
    machine["tree"] = source_tree()
    shown = []
    for setting in ("shared_buffers", "work_mem", "max_wal_size", "synchronous_commit", "jit"):
        shown.append(f"{setting}={await admin.fetchval(f'SHOW {setting}')}")
    machine["settings"] = ", ".join(shown)
    await admin.close()
    log(f"machine {machine}")
    if args.reuse_database:
        # The ingestion comparison needs empty tables: it runs in a throw-away database.
        async with bench_database(server, keep=False) as scratch_url:
            ingestion, sample_size, product_name = await ingestion_only(args, scratch_url, phases)
        url = f"{server}/{args.reuse_database}"
        report = await queries_only(
            args, url, machine, phases, ingestion, sample_size, product_name
        )
    else:
        async with bench_database(server, keep=args.keep_database) as url:
            report = await load_and_query(args, url, machine, phases)
    phases["total"] = time.monotonic() - run_started
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report = report.replace("{TOTAL}", f"{phases['total'] / 60:.1f} min").replace(
        "{LOAD_END}", load_end
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report, flush=True)


@contextlib.asynccontextmanager
async def bench_database(server: str, *, keep: bool) -> AsyncIterator[str]:
    """A fresh, migrated database's URL; dropped afterwards unless `keep`."""
    from tokenmanager.storage import migrate
    from tokenmanager.storage.engine import create_engine

    name = f"tm_bench_{uuid.uuid4().hex[:10]}"
    admin = await admin_connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"{server}/{name}"
    log(f"database {name} created")
    try:
        engine = create_engine(url)
        await migrate.upgrade(engine)
        await engine.dispose()
        yield url
    finally:
        if keep:
            log(f"database kept (--keep-database): {url}; rerun with --reuse-database {name}")
        else:
            admin = await admin_connect(server)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
            log(f"database {name} dropped")


def bench_settings(url: str) -> Any:
    from tokenmanager.testing import make_settings

    work = Path(tempfile.mkdtemp(prefix="tm-analytics-bench-"))
    # Raw retention beyond the data's 30 days: the control plane prunes at start-up and must
    # not delete rows while the queries are measured (a long run crosses the 30-day line).
    return make_settings(work / "data", database_url=url, retention_raw_days=35)


async def create_population(services: Any, rng: random.Random) -> Population:
    """The teams, tokens and admin user, through the services."""
    actor = cli_actor()
    tokens: list[tuple[int, str]] = []
    for (team_id, team_name), count in zip(TEAMS, TOKENS_PER_TEAM, strict=True):
        await services.teams.create(actor, team_id=team_id, name=team_name)
        for index in range(count):
            issued = await services.tokens.issue(
                actor, name=f"{team_id}-token-{index:03d}", team_id=team_id, scopes=["api:call"]
            )
            tokens.append((issued.token.id, hash_token(issued.token_secret)))
    await services.users.create(
        actor, username=ADMIN_USER, password=ADMIN_PASSWORD, role=Role.ADMIN
    )
    log(f"{len(tokens)} tokens in {len(TEAMS)} teams created")
    return build_population(tokens, rng)


async def measure_ingestion(
    settings: Any, services: Any, url: str, sample: list[UsageEvent]
) -> tuple[dict[str, float], Any, str]:
    """Raw COPY baselines, then the product's recorder on the same rows into the empty real
    table. Returns the rates and the recorder (still running, for the rest of a load)."""
    from tokenmanager.composition import build_recorder, build_spool

    batch_size = settings.usage_batch_size
    ingestion = await copy_baselines(url, sample, batch_size)
    # One writer first (the tables emptied after it), then the default number of writers,
    # whose recorder goes on with the rest of a load.
    single = settings.model_copy(update={"usage_writers": 1})
    for run_settings in (single, settings):
        await checkpoint(url)
        recorder = build_recorder(run_settings, services.database, build_spool(run_settings))
        await recorder.start()
        product_started = time.perf_counter()
        await feed(recorder, sample, settings.usage_queue_size)
        await wait_written(recorder, len(sample))
        product_elapsed = time.perf_counter() - product_started
        writers = run_settings.usage_writers
        product_name = f"product: UsageRecorder → insert_usage_events (batch {batch_size}), " + (
            "1 writer" if writers == 1 else f"{writers} writers at a time (the default)"
        )
        ingestion[product_name] = len(sample) / product_elapsed
        log(
            f"{product_name}: {len(sample)} rows in {product_elapsed:.1f} s = "
            f"{ingestion[product_name]:,.0f} rows/s"
        )
        if run_settings is single:
            await recorder.stop()
            await empty_usage_tables(url)
    return ingestion, recorder, product_name


async def empty_usage_tables(url: str) -> None:
    """Back to no usage at all, so that the next path also writes into empty tables."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("TRUNCATE token_usage_logs, usage_hourly, usage_daily")
        await connection.execute("UPDATE tokens SET last_used = NULL")
    finally:
        await connection.close()


async def ingestion_only(
    args: argparse.Namespace, url: str, phases: dict[str, float]
) -> tuple[dict[str, float], int, str]:
    from tokenmanager.composition import build_services

    settings = bench_settings(url)
    services = build_services(settings)
    try:
        population = await create_population(services, random.Random(args.seed))
        sample_size = min(args.sample, args.rows)
        events = itertools.chain.from_iterable(
            generate(args.rows, datetime.now(UTC), population, args.seed)
        )
        sample = list(itertools.islice(events, sample_size))
        ingestion, recorder, product_name = await measure_ingestion(settings, services, url, sample)
        await recorder.stop()
    finally:
        await services.close()
    return ingestion, sample_size, product_name


async def load_and_query(
    args: argparse.Namespace, url: str, machine: dict[str, str], phases: dict[str, float]
) -> str:
    from tokenmanager.composition import build_services

    settings = bench_settings(url)
    services = build_services(settings)
    started = time.monotonic()
    population = await create_population(services, random.Random(args.seed))
    end = datetime.now(UTC)
    log(f"data ends {end:%Y-%m-%d %H:%M} UTC")

    sample_size = min(args.sample, args.rows)
    events = itertools.chain.from_iterable(generate(args.rows, end, population, args.seed))
    generated = time.monotonic()
    sample = list(itertools.islice(events, sample_size))
    log(f"sample of {len(sample)} events generated in {time.monotonic() - generated:.1f} s")
    phases["setup"] = generated - started

    ingestion, recorder, product_name = await measure_ingestion(settings, services, url, sample)
    product_elapsed = len(sample) / ingestion[product_name]
    del sample

    rest_started = time.perf_counter()
    rest = 0
    while True:
        chunk = list(itertools.islice(events, 50_000))
        if not chunk:
            break
        rest += await feed(recorder, chunk, settings.usage_queue_size)
        if rest % 1_000_000 < 50_000:
            done = sample_size + rest
            rate = rest / (time.perf_counter() - rest_started)
            log(f"loaded {done:,} of {args.rows:,} ({rate:,.0f} rows/s incl. generation)")
    await wait_written(recorder, sample_size + rest)
    rest_elapsed = time.perf_counter() - rest_started
    await recorder.stop()
    phases["load"] = product_elapsed + rest_elapsed
    total_rows = sample_size + rest
    phases["full_rate"] = total_rows / phases["load"]
    log(
        f"all {total_rows:,} events loaded through the recorder in {phases['load']:.0f} s "
        f"({phases['full_rate']:,.0f} rows/s overall; the {rest:,} after the sample: "
        f"{rest / rest_elapsed if rest_elapsed else 0:,.0f} rows/s incl. generation)"
    )
    await services.close()

    connection = await asyncpg.connect(url)
    try:
        maintenance_started = time.monotonic()
        await connection.execute(
            "VACUUM (ANALYZE) token_usage_logs, usage_hourly, usage_daily, tokens"
        )
        phases["vacuum"] = time.monotonic() - maintenance_started
    finally:
        await connection.close()
    return await queries_only(
        args, url, machine, phases, ingestion, sample_size, product_name, expected_rows=args.rows
    )


async def queries_only(
    args: argparse.Namespace,
    url: str,
    machine: dict[str, str],
    phases: dict[str, float],
    ingestion: dict[str, float],
    sample_size: int,
    product_name: str,
    expected_rows: int | None = None,
) -> str:
    """Check the stored data, then measure the API and the seed's queries on it. The clock
    (time-machine) is set to the data's end, so that a reused database answers the same
    windows as right after its load."""
    import time_machine

    connection = await asyncpg.connect(url)
    try:
        counts = {
            "token_usage_logs": await connection.fetchval("SELECT count(*) FROM token_usage_logs"),
            "usage_hourly": await connection.fetchval("SELECT count(*) FROM usage_hourly"),
            "usage_daily": await connection.fetchval("SELECT count(*) FROM usage_daily"),
        }
        sizes = {}
        for table in counts:
            sizes[table] = await connection.fetchval(
                f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))"
            )
        hourly_calls = await connection.fetchval("SELECT sum(calls) FROM usage_hourly")
        daily_calls = await connection.fetchval("SELECT sum(calls) FROM usage_daily")
        raw_errors = await connection.fetchval(
            "SELECT count(*) FROM token_usage_logs WHERE response_status >= 400 OR failure_kind IS "
            "NOT NULL"
        )
        rollup_errors = await connection.fetchval("SELECT sum(errors) FROM usage_daily")
        data_end = (await connection.fetchval("SELECT max(used_at) FROM token_usage_logs")).replace(
            tzinfo=UTC
        )
    finally:
        await connection.close()
    consistent = (
        counts["token_usage_logs"] == hourly_calls == daily_calls
        and expected_rows in (None, counts["token_usage_logs"])
        and raw_errors == rollup_errors
    )
    log(
        f"rows {counts}, sizes {sizes}; rollups match raw rows: {consistent} "
        f"(hourly {hourly_calls}, daily {daily_calls}, errors {raw_errors}/{rollup_errors})"
    )
    if not consistent:
        raise RuntimeError("the rollups do not match the raw rows")

    settings = bench_settings(url)
    query_started = time.monotonic()
    clock_at = data_end + timedelta(seconds=1)
    log(f"clock set to {clock_at:%Y-%m-%d %H:%M:%S} UTC (the data's end)")
    with time_machine.travel(clock_at, tick=True):
        api_timings, busy = await measure_api(settings, args.requests)
        raw_timings = await measure_raw(url, busy, args.requests)
    phases["queries"] = time.monotonic() - query_started
    return build_report(
        args,
        machine,
        ingestion,
        sample_size,
        counts["token_usage_logs"],
        phases,
        counts,
        sizes,
        api_timings,
        raw_timings,
        busy,
        product_name,
        data_end,
    )


async def measure_api(settings: Any, requests: int) -> tuple[list[Timing], dict[str, Any]]:
    import aiohttp

    from tokenmanager.api.app import create_app
    from tokenmanager.testing import running_asgi_server

    app = create_app(settings)
    async with running_asgi_server(app) as base, aiohttp.ClientSession(base) as session:
        async with session.post(
            "/api/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        ) as answer:
            assert answer.status == 200, await answer.text()
            headers = {"Authorization": f"Bearer {(await answer.json())['access_token']}"}

        async def get(path: str, params: dict[str, str] | None = None) -> Any:
            async with session.get(path, params=params, headers=headers) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{path} {params}: {answer.status} {body[:300]!r}")
                return body

        import json

        overview = json.loads(await get("/api/usage/stats", {"window": "30d", "bucket": "day"}))
        busy_tokens = [t["token_id"] for t in overview["top_tokens"] if t["token_id"] is not None][
            :5
        ]
        busy_routes = [r["route_path"] for r in overview["top_routes"]][:5]
        busy = {"tokens": busy_tokens, "routes": busy_routes, "overview": overview["overview"]}
        log(f"busy tokens {busy_tokens}, busy routes {busy_routes}")

        cases: list[tuple[str, float, list[tuple[str, dict[str, str] | None]]]] = [
            ("GET /api/usage/stats (default: 24h)", 50, [("/api/usage/stats", None)]),
            ("GET /api/usage/stats?window=7d", 50, [("/api/usage/stats", {"window": "7d"})]),
            ("GET /api/usage/stats?window=30d", 50, [("/api/usage/stats", {"window": "30d"})]),
            (
                "GET /api/usage/stats?window=30d&bucket=day",
                50,
                [("/api/usage/stats", {"window": "30d", "bucket": "day"})],
            ),
            (
                "GET /api/usage/token/{id} (default: 30d, 100 recent), top-5 tokens",
                100,
                [(f"/api/usage/token/{token_id}", None) for token_id in busy_tokens],
            ),
            (
                "GET /api/usage/route?route_path=… (default: 24h), top-5 routes",
                100,
                [("/api/usage/route", {"route_path": route}) for route in busy_routes],
            ),
            (
                "GET /api/usage/route?route_path=…&window=30d, top-5 routes",
                100,
                [
                    ("/api/usage/route", {"route_path": route, "window": "30d"})
                    for route in busy_routes
                ],
            ),
        ]
        timings: list[Timing] = []
        for label, target, targets in cases:
            for path, params in targets * 2:  # warm-up: each target twice
                await get(path, params)
            samples: list[float] = []
            for index in range(requests):
                path, params = targets[index % len(targets)]
                started = time.perf_counter()
                await get(path, params)
                samples.append((time.perf_counter() - started) * 1000)
            timing = Timing(label, samples, target)
            timings.append(timing)
            log(f"{label}: p50 {timing.p50:.1f} ms, p95 {timing.p95:.1f} ms (n={len(samples)})")
    return timings, busy


async def measure_raw(url: str, busy: dict[str, Any], requests: int) -> list[Timing]:
    """The seed's raw-table queries (what its endpoints ran), straight on token_usage_logs."""
    connection = await asyncpg.connect(url)
    try:
        token_id = busy["tokens"][0]
        token_hash = await connection.fetchval(
            "SELECT token_hash FROM tokens WHERE id = $1", token_id
        )
        route = busy["routes"][0]
        since_24h = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=24)
        queries: list[tuple[str, str, tuple[Any, ...]]] = [
            (
                "seed overview: COUNT, AVG, success rate (all rows)",
                "SELECT count(*) AS total_calls, count(*) FILTER (WHERE response_status >= 400) AS "
                "total_errors, "
                "avg(response_time_ms) AS avg_response_time, "
                "100.0 * count(*) FILTER (WHERE response_status < 400) / nullif(count(*), 0) AS "
                "success_rate "
                "FROM token_usage_logs",
                (),
            ),
            (
                "seed hourly usage: GROUP BY hour, last 24 h",
                "SELECT date_trunc('hour', used_at) AS hour, count(*) AS call_count, "
                "avg(response_time_ms) AS avg_response_time FROM token_usage_logs "
                "WHERE used_at >= $1 GROUP BY 1 ORDER BY 1",
                (since_24h,),
            ),
            (
                "seed top 10 tokens: GROUP BY token_hash JOIN tokens",
                "SELECT t.name, t.team_id, count(*) AS usage_count FROM token_usage_logs l "
                "JOIN tokens t ON t.token_hash = l.token_hash GROUP BY t.token_hash, t.name, "
                "t.team_id "
                "ORDER BY usage_count DESC LIMIT 10",
                (),
            ),
            (
                "seed top 10 routes: GROUP BY route_path",
                "SELECT route_path, count(*) AS call_count, avg(response_time_ms) AS "
                "avg_response_time, "
                "100.0 * count(*) FILTER (WHERE response_status < 400) / count(*) AS success_rate "
                "FROM token_usage_logs GROUP BY route_path ORDER BY call_count DESC LIMIT 10",
                (),
            ),
            (
                "seed one token: stats (busiest token, all rows)",
                "SELECT count(*) AS total_calls, count(*) FILTER (WHERE response_status >= 400) AS "
                "error_count, "
                "avg(response_time_ms), min(used_at) AS first_used, max(used_at) AS last_used "
                "FROM token_usage_logs WHERE token_hash = $1",
                (token_hash,),
            ),
            (
                "seed one token: last 100 rows",
                "SELECT route_path, used_at, response_status, response_time_ms FROM "
                "token_usage_logs "
                "WHERE token_hash = $1 ORDER BY used_at DESC LIMIT 100",
                (token_hash,),
            ),
            (
                "seed one route: stats (busiest route, all rows)",
                "SELECT count(*) AS total_calls, count(*) FILTER (WHERE response_status >= 400) AS "
                "error_count, "
                "avg(response_time_ms) AS avg_response_time FROM token_usage_logs WHERE route_path "
                "= $1",
                (route,),
            ),
        ]
        timings: list[Timing] = []
        for label, sql, params in queries:
            await connection.fetch(sql, *params)  # warm-up (and the plan)
            samples: list[float] = []
            budget_end = time.monotonic() + 60
            while len(samples) < requests and (len(samples) < 5 or time.monotonic() < budget_end):
                started = time.perf_counter()
                await connection.fetch(sql, *params)
                samples.append((time.perf_counter() - started) * 1000)
            timing = Timing(label, samples)
            timings.append(timing)
            log(f"{label}: p50 {timing.p50:.1f} ms, p95 {timing.p95:.1f} ms (n={len(samples)})")
        return timings
    finally:
        await connection.close()


def build_report(
    args: argparse.Namespace,
    machine: dict[str, str],
    ingestion: dict[str, float],
    sample_size: int,
    total_rows: int,
    phases: dict[str, float],
    counts: dict[str, int],
    sizes: dict[str, str],
    api: list[Timing],
    raw: list[Timing],
    busy: dict[str, Any],
    product_name: str,
    data_end: datetime,
) -> str:
    copy_one = next(v for k, v in ingestion.items() if k.startswith("raw COPY (one"))
    copy_batched = next(v for k, v in ingestion.items() if k.startswith(f"raw COPY {TIMES}"))
    product = ingestion[product_name]
    one_writer = next(v for k, v in ingestion.items() if k.endswith(" 1 writer"))
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `bench/analytics_bench.py "
        f"--rows {args.rows} --sample {args.sample} --requests {args.requests}"
        f"{' --reuse-database ' + args.reuse_database if args.reuse_database else ''}`, "
        f"{machine['nproc']} cores "
        f"(load average {machine['load']} at start, {{LOAD_END}} at the end: other work shares the "
        f"machine), {machine['postgres']} on 127.0.0.1 ({machine['settings']}); source "
        "tree "
        f"{machine['tree']}; whole run {{TOTAL}}.",
        "",
        f"Data: {total_rows:,} synthetic events over the last {DAYS} days, {sum(TOKENS_PER_TEAM)} "
        "tokens in "
        f"{len(TEAMS)} teams (created through the services), {UNKNOWN_HASHES} unknown hashes "
        f"(~{UNKNOWN_SHARE:.0%} of calls), {len(ROUTES)} routes, 1-3 % errors. Stored: "
        + ", ".join(f"{table} {counts[table]:,} rows ({sizes[table]})" for table in counts)
        + "; the rollups' calls and errors equal the raw rows' (checked).",
        "",
        f"### Ingestion ({sample_size:,} rows, the same rows for each path, each into an empty "
        "table "
        "with the same indexes)",
        "",
        "| path | rows/s | vs one COPY |",
        "|---|---:|---:|",
    ]
    for name, rate in ingestion.items():
        lines.append(f"| {name} | {rate:,.0f} | {rate / copy_one:.2f} |")
    lines += [
        "",
        f"- product / raw COPY: **{product / copy_one:.2f}** (target ≥ 0.5: "
        f"{'met' if product / copy_one >= 0.5 else 'NOT met'}); product / COPY {TIMES}batch: "
        f"{product / copy_batched:.2f}; one writer / raw COPY: {one_writer / copy_one:.2f}; "
        f"{product / one_writer:.2f}{TIMES} the rows/s of one writer",
        full_load_line(total_rows, phases, data_end),
        "",
        f"### Query latency ({total_rows:,} rows; API: sequential HTTP requests to the control "
        "plane, "
        "client time included; seed: the same questions as raw-table SQL via asyncpg)",
        "",
        "| query | n | p50 ms | p95 ms | target p95 | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for timing in api:
        verdict = "met" if timing.p95 <= (timing.target_ms or math.inf) else "NOT met"
        lines.append(
            f"| {timing.name} | {len(timing.samples_ms)} | {timing.p50:.1f} | {timing.p95:.1f} "
            f"| ≤ {timing.target_ms:.0f} | {verdict} |"
        )
    for timing in raw:
        lines.append(
            f"| {timing.name} | {len(timing.samples_ms)} | {timing.p50:.1f} | {timing.p95:.1f} | | "
            "|"
        )
    lines += [
        "",
        f"Busy tokens (ids, busiest first): {busy['tokens']}; busy routes: {busy['routes']}. "
        f"30-day overview from the API: {busy['overview']['total_calls']:,} calls, "
        f"{busy['overview']['error_rate']} % errors, p50/p95/p99 "
        f"{busy['overview']['p50_response_time']}/"
        f"{busy['overview']['p95_response_time']}/{busy['overview']['p99_response_time']} ms.",
    ]
    return "\n".join(lines) + "\n"


def full_load_line(total_rows: int, phases: dict[str, float], data_end: datetime) -> str:
    if "load" not in phases:
        return (
            f"- the queried database was loaded by an earlier run (--keep-database) through the "
            f"same recorder, its data ending {data_end:%Y-%m-%d %H:%M} UTC; the clock was set to "
            "that moment for the queries (time-machine), so the windows hold the same data as "
            "right after the load. Ingestion above ran in a fresh throw-away database."
        )
    return (
        f"- full load: all {total_rows:,} rows through the same recorder in "
        f"{phases['load'] / 60:.1f} min ({phases['full_rate']:,.0f} rows/s overall, event "
        "generation in the same process included after the sample; the table grows from 0 to "
        f"{total_rows:,} rows meanwhile); VACUUM ANALYZE {phases['vacuum']:.0f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="events to load (default 10 M)"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=1_000_000,
        help="events for the ingestion comparison (default 1 M, at most --rows)",
    )
    parser.add_argument(
        "--requests", type=int, default=60, help="timed requests per query (default 60)"
    )
    parser.add_argument(
        "--server",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server (a role that may create databases)",
    )
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="leave the database (and print its URL) for inspection or --reuse-database; drop "
        "it yourself",
    )
    parser.add_argument(
        "--reuse-database",
        metavar="NAME",
        help="query a database kept by an earlier --keep-database run instead of loading one "
        "(ingestion is still measured, in a throw-away database)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/analytics.md")
    args = parser.parse_args()
    if "127.0.0.1" not in args.server and "localhost" not in args.server:
        parser.error("--server must be on 127.0.0.1 (the benchmark stays on loopback)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
