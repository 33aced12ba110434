"""Security detector benchmark: how long one detector run takes, beside a baseline query
measured in the same run.

Method (one process, one run, on a throw-away database it creates — a SQLite file in a temp
dir, or a PostgreSQL database created and dropped on --server):

1. Data. Enough real tokens (issued through the services) for ~--rows synthetic usage rows over
   30 days from `tokenmanager.security.evaluation` (office-hours, round-the-clock and nightly
   tokens, three routes, ~1-2 % errors), every anomaly kind injected near the end, stored
   through the recorder's own insert (raw rows plus hourly and daily rollups). Then ANALYZE.
2. Steady state. The detectors' cursor is set one minute before the end of the busiest hour of
   the history's last two days and one run is timed (the production cadence: one minute of
   rows, with their baselines from the rollup); repeated --repeat times, the cursor reset each
   time.
3. Catch-up. The same for one hour of rows in one run (the largest slice a run reads).
4. Baseline. The seed's raw-table query over the last 24 hours, "calls per token"
   (`SELECT token_hash, count(*) … WHERE used_at >= … GROUP BY token_hash`), --repeat times.
   Ratios of the medians are reported; absolute times on this shared machine are noisy.

With --reuse-database NAME, step 1 is skipped: steps 2-4 run against that existing, migrated
PostgreSQL database on --server (e.g. the 10 M-row one `analytics_bench.py --keep-database`
leaves), at its data's end: the busiest hour of the last two days before its newest row, from
the hourly rollup. Its usage data is only read; the detectors write their own tables
(sightings, findings) as in production, and their cursor is put back where it was.

    .venv/bin/python bench/security_bench.py [--rows 1000000] [--backend sqlite|postgres]
                                             [--server postgresql://postgres@127.0.0.1:5432]
                                             [--repeat 5] [--reuse-database NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tokenmanager.access.actor import Actor, Role
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services, build_services
from tokenmanager.security.detectors import floor_time
from tokenmanager.security.evaluation import (
    ANOMALY_KINDS,
    SyntheticToken,
    build_scenario,
    store_events,
)
from tokenmanager.security.monitor import CURSOR, SecurityMonitor
from tokenmanager.storage import migrate
from tokenmanager.storage import security as security_sql
from tokenmanager.storage.database import Database
from tokenmanager.storage.engine import create_engine
from tokenmanager.storage.schema import security_cursors, token_usage_logs, usage_hourly
from tokenmanager.storage.schema import tokens as token_table
from tokenmanager.testing import PostgresDatabases, build_sqlite_template, make_settings
from tokenmanager.tokens import codec

ROWS_PER_TOKEN = 6250  # the scenario's average over 30 days


async def _median_s(repeat: int, step: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _load(services: Services, rows: int) -> tuple[datetime, dict[str, Any]]:
    """Store ~`rows` synthetic rows; returns where the timed slices end, and what was loaded."""
    admin = Actor(name="bench", role=Role.ADMIN)
    await services.teams.create(admin, team_id="bench", name="Bench")
    tokens = []
    for index in range(max(12, round(rows / ROWS_PER_TOKEN))):
        issued = await services.tokens.issue(admin, name=f"bench {index}", team_id="bench")
        tokens.append(SyntheticToken(issued.token.id, codec.hash_token(issued.token_secret)))
    started = time.perf_counter()
    scenario = build_scenario(tokens, end=utcnow(), days=30, inject=set(ANOMALY_KINDS))
    generated_s = time.perf_counter() - started
    started = time.perf_counter()
    await store_events(services.database, scenario.events)
    stored_s = time.perf_counter() - started
    async with services.database.write() as connection:
        await connection.execute(sa.text("ANALYZE"))
    # Slices end at the end of the busiest hour of the last two days, not at a quiet moment.
    recent = Counter(
        floor_time(e.used_at, 3600)
        for e in scenario.events
        if e.used_at >= scenario.end - timedelta(days=2)
    )
    end: datetime = max(recent, key=lambda hour: recent[hour]) + timedelta(hours=1)
    return end, {
        "rows": len(scenario.events),
        "tokens": len(tokens),
        "generate_s": round(generated_s, 1),
        "store_s": round(stored_s, 1),
    }


async def _existing_data(database: Database) -> tuple[datetime, dict[str, Any]]:
    """Where the timed slices end in an already loaded database (the busiest hour of the last
    two days before its newest row, as `_load` picks it), and what it holds."""
    async with database.read() as connection:
        data_end: datetime = await connection.scalar(
            sa.select(sa.func.max(token_usage_logs.c.used_at))
        )
        calls = sa.func.sum(usage_hourly.c.calls)
        busiest = await connection.execute(
            sa.select(usage_hourly.c.hour, calls)
            .where(usage_hourly.c.hour >= floor_time(data_end - timedelta(days=2), 3600))
            .group_by(usage_hourly.c.hour)
            .order_by(calls.desc())
            .limit(1)
        )
        hour, hour_calls = busiest.one()
        rows = await connection.scalar(sa.select(sa.func.count()).select_from(token_usage_logs))
        token_count = await connection.scalar(sa.select(sa.func.count()).select_from(token_table))
        first = await connection.scalar(sa.select(sa.func.min(token_usage_logs.c.used_at)))
    return hour + timedelta(hours=1), {
        "rows": rows,
        "tokens": token_count,
        "data_from": f"{first:%Y-%m-%d %H:%M}",
        "data_end": f"{data_end:%Y-%m-%d %H:%M}",
        "busiest_hour": f"{hour:%Y-%m-%d %H:%M} ({hour_calls} calls)",
    }


async def _measure(database: Database, end: datetime, repeat: int) -> dict[str, Any]:
    """Time the detector runs and the baseline query, the slices ending at `end`."""
    monitor = SecurityMonitor(database, lag_s=0)

    async def detector_run(span: timedelta) -> int:
        await monitor.start_at(end - span)
        return (await monitor.run_once(end)).rows

    minute_rows = await detector_run(timedelta(minutes=1))
    hour_rows = await detector_run(timedelta(hours=1))
    steady_s = await _median_s(repeat, lambda: detector_run(timedelta(minutes=1)))
    catch_up_s = await _median_s(repeat, lambda: detector_run(timedelta(hours=1)))

    async def baseline() -> None:
        async with database.read() as connection:
            query = (
                sa.select(token_usage_logs.c.token_hash, sa.func.count())
                .where(token_usage_logs.c.used_at >= end - timedelta(hours=24))
                .group_by(token_usage_logs.c.token_hash)
            )
            (await connection.execute(query)).all()

    baseline_s = await _median_s(repeat, baseline)
    return {
        "slices_end": f"{end:%Y-%m-%d %H:%M}",
        "rows_in_1_min_slice": minute_rows,
        "rows_in_1_h_slice": hour_rows,
        "detector_run_1_min_ms": round(steady_s * 1000, 1),
        "detector_run_1_h_ms": round(catch_up_s * 1000, 1),
        "baseline_24h_calls_per_token_ms": round(baseline_s * 1000, 1),
        "ratio_1_min_run_to_baseline": round(steady_s / baseline_s, 2),
        "ratio_1_h_run_to_baseline": round(catch_up_s / baseline_s, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--reuse-database",
        metavar="NAME",
        help="measure against this existing, migrated PostgreSQL database on --server instead "
        "of loading a throw-away one (its usage rows are only read)",
    )
    options = parser.parse_args()
    if options.reuse_database:
        load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
        result = await _measure_existing(options.server, options.reuse_database, options.repeat)
        result["load_average_at_start"] = load_at_start
        _print_result(f"postgres, database {options.reuse_database}", result)
        return
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory)
        databases: PostgresDatabases | None = None
        if options.backend == "sqlite":
            url = f"sqlite:///{data_dir / 'bench.db'}"
            await asyncio.to_thread(build_sqlite_template, data_dir / "bench.db")
        else:
            databases = PostgresDatabases(options.server)
            url = await databases.create_database(migrated=False)
            engine = create_engine(url)
            await migrate.upgrade(engine)
            await engine.dispose()
        services = build_services(make_settings(data_dir / "data", url))
        try:
            end, loaded = await _load(services, options.rows)
            result = {**loaded, **await _measure(services.database, end, options.repeat)}
        finally:
            await services.close()
            if databases is not None:
                await databases.drop_database(url)
    _print_result(options.backend, result)


async def _measure_existing(server: str, name: str, repeat: int) -> dict[str, Any]:
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    database = Database.from_url(url)
    try:
        await migrate.ensure_at_head(database.engine)
        async with database.read() as connection:
            cursor = await security_sql.read_cursor(connection, CURSOR)
        try:
            end, existing = await _existing_data(database)
            return {**existing, **await _measure(database, end, repeat)}
        finally:
            # A later run of the control plane on this database resumes where it was.
            async with database.write() as connection:
                if cursor is None:
                    await connection.execute(
                        security_cursors.delete().where(security_cursors.c.name == CURSOR)
                    )
                else:
                    await security_sql.write_cursor(connection, CURSOR, cursor)
    finally:
        await database.dispose()


def _print_result(label: str, result: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.now(UTC)
    print(f"security detectors, {label}, {now:%Y-%m-%d %H:%M} UTC, load average {load}")
    for key, value in result.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
