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

    .venv/bin/python bench/security_bench.py [--rows 1000000] [--backend sqlite|postgres]
                                             [--server postgresql://postgres@127.0.0.1:5432]
                                             [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tokenmanager.access.actor import Actor, Role
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services, build_services
from tokenmanager.security.detectors import floor_time
from tokenmanager.security.evaluation import SyntheticToken, build_scenario, store_events
from tokenmanager.security.models import DetectorKind
from tokenmanager.security.monitor import SecurityMonitor
from tokenmanager.storage import migrate
from tokenmanager.storage.engine import create_engine
from tokenmanager.storage.schema import token_usage_logs
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


async def _measure(services: Services, rows: int, repeat: int) -> dict[str, Any]:
    admin = Actor(name="bench", role=Role.ADMIN)
    await services.teams.create(admin, team_id="bench", name="Bench")
    tokens = []
    for index in range(max(12, round(rows / ROWS_PER_TOKEN))):
        issued = await services.tokens.issue(admin, name=f"bench {index}", team_id="bench")
        tokens.append(SyntheticToken(issued.token.id, codec.hash_token(issued.token_secret)))
    started = time.perf_counter()
    scenario = build_scenario(tokens, end=utcnow(), days=30, inject=set(DetectorKind))
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
    monitor = SecurityMonitor(services.database, lag_s=0)

    async def detector_run(span: timedelta) -> int:
        await monitor.start_at(end - span)
        return (await monitor.run_once(end)).rows

    minute_rows = await detector_run(timedelta(minutes=1))
    hour_rows = await detector_run(timedelta(hours=1))
    steady_s = await _median_s(repeat, lambda: detector_run(timedelta(minutes=1)))
    catch_up_s = await _median_s(repeat, lambda: detector_run(timedelta(hours=1)))

    async def baseline() -> None:
        async with services.database.read() as connection:
            query = (
                sa.select(token_usage_logs.c.token_hash, sa.func.count())
                .where(token_usage_logs.c.used_at >= end - timedelta(hours=24))
                .group_by(token_usage_logs.c.token_hash)
            )
            (await connection.execute(query)).all()

    baseline_s = await _median_s(repeat, baseline)
    return {
        "rows": len(scenario.events),
        "tokens": len(tokens),
        "generate_s": round(generated_s, 1),
        "store_s": round(stored_s, 1),
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
    options = parser.parse_args()
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
            result = await _measure(services, options.rows, options.repeat)
        finally:
            await services.close()
            if databases is not None:
                await databases.drop_database(url)
    print(f"security detectors, {options.backend}, {datetime.now():%Y-%m-%d %H:%M}")
    for key, value in result.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
