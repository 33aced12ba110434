"""Rollup rebuild and retention on both backends: a rebuild from the raw rows gives exactly the
rows the recorder kept, and replaces (never adds to) what is there; pruning deletes raw rows
past `raw_days` and rollup rows past `rollup_days` and nothing else, and the figures of a window
still inside rollup retention do not change when its raw rows go."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from time_machine import TimeMachineFixture

from tokenmanager.access.actor import Actor
from tokenmanager.analytics.windows import Window
from tokenmanager.composition import Services
from tokenmanager.settings import Settings
from tokenmanager.storage import maintenance
from tokenmanager.storage.schema import token_usage_logs, usage_daily, usage_hourly
from tokenmanager.storage.tokens import read_token_hashes
from tokenmanager.storage.usage import insert_usage_events
from tokenmanager.testing import make_settings
from tokenmanager.usage.events import UsageEvent

NOW = datetime(2030, 3, 20, 9, 40, 0, tzinfo=UTC)
RAW_DAYS = 6
ROLLUP_DAYS = 10
RAW_CUTOFF = NOW - timedelta(days=RAW_DAYS)  # 2030-03-14 09:40
FIRST_WHOLE_RAW_DAY = datetime(2030, 3, 15, tzinfo=UTC)  # the first day no prune has cut
ROLLUP_CUTOFF = datetime(2030, 3, 10, tzinfo=UTC)  # the UTC day of NOW - ROLLUP_DAYS
TEAM_ID = "upkeep-team"
UNKNOWN_HASH = "cd" * 32
ZONES = (UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30)))
HOUR = timedelta(hours=1)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url,
        retention_raw_days=RAW_DAYS,
        retention_rollup_days=ROLLUP_DAYS,
    )


@pytest.fixture
def frozen(time_machine: TimeMachineFixture) -> None:
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
async def token_hashes(frozen: None, services: Services, admin: Actor) -> list[tuple[str, int]]:
    """Two tokens' (hash, id)."""
    await services.teams.create(admin, team_id=TEAM_ID, name="Upkeep")
    hashes = []
    for name in ("one", "two"):
        issued = await services.tokens.issue(admin, name=name, team_id=TEAM_ID, scopes=["*"])
        async with services.database.read() as connection:
            token_hash, _ = await read_token_hashes(connection, issued.token.id)
        hashes.append((token_hash, issued.token.id))
    return hashes


def make_events(
    token_hashes: list[tuple[str, int]],
    *,
    seed: int,
    count: int,
    since: datetime = NOW - timedelta(days=14),
) -> list[UsageEvent]:
    """Events from `since` to NOW; from before the raw cutoff also one on each retention
    cutoff's either side."""
    rng = random.Random(seed)
    span_us = (NOW - since) // timedelta(microseconds=1)
    moments = [NOW - timedelta(microseconds=rng.randrange(span_us)) for _ in range(count)]
    if since < RAW_CUTOFF:
        moments += [
            RAW_CUTOFF,
            RAW_CUTOFF - timedelta(microseconds=1),
            ROLLUP_CUTOFF,
            ROLLUP_CUTOFF - timedelta(microseconds=1),
            RAW_CUTOFF.replace(hour=0, minute=0),  # the day the raw cutoff cuts in two
        ]
    events = []
    for number, moment in enumerate(moments):
        token_hash, token_id = rng.choice([*token_hashes, (UNKNOWN_HASH, None)])
        events.append(
            UsageEvent(
                token_hash=token_hash,
                token_id=token_id if rng.random() < 0.5 else None,
                route_path=rng.choice(["/a", "/b", None]),
                used_at=moment.astimezone(rng.choice(ZONES)),
                response_status=rng.choice([200, 201, 404, 500, 502, None]),
                response_time_ms=rng.choice([None, rng.randrange(0, 5000), rng.randrange(10**6)]),
                error_message=rng.choice([None, "boom"]),
                failure_kind=rng.choice([None, None, "timeout"]),
                bytes_in=rng.choice([None, rng.randrange(10**4)]),
                bytes_out=rng.choice([None, rng.randrange(10**8)]),
                event_id=f"00000000-0000-4000-8000-{seed:04d}{number:08d}",
            )
        )
    return events


async def insert(services: Services, events: list[UsageEvent], batches: int = 3) -> None:
    size = max(len(events) // batches, 1)
    for start in range(0, len(events), size):
        async with services.database.write() as connection:
            await insert_usage_events(connection, events[start : start + size])


async def rollup_rows(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of both rollups, in key order."""
    rows = {}
    async with services.database.read() as connection:
        for table, period in ((usage_hourly, "hour"), (usage_daily, "day")):
            keys = [table.c[period], table.c.token_hash, table.c.route_path, table.c.status_class]
            result = await connection.execute(sa.select(table).order_by(*keys))
            rows[period] = [tuple(row) for row in result]
    return rows


async def delete_rollups(services: Services) -> None:
    async with services.database.write() as connection:
        await connection.execute(usage_hourly.delete())
        await connection.execute(usage_daily.delete())


async def raw_moments(services: Services) -> list[datetime]:
    async with services.database.read() as connection:
        result = await connection.execute(
            sa.select(token_usage_logs.c.used_at).order_by(token_usage_logs.c.used_at)
        )
        return list(result.scalars())


def calls_per_period(rows: list[tuple[Any, ...]], table: sa.Table) -> Counter[datetime]:
    calls = table.c.keys().index("calls")
    counts: Counter[datetime] = Counter()
    for row in rows:
        counts[row[0]] += row[calls]
    return counts


# -- rebuild ---------------------------------------------------------------------------------


async def test_rebuild_after_deleting_the_rollups_gives_the_recorders_rows(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    events = make_events(token_hashes, seed=1, count=300, since=FIRST_WHOLE_RAW_DAY)
    await insert(services, events)
    await insert(services, events[:40], batches=1)  # replayed: counted once
    recorded = await rollup_rows(services)

    await delete_rollups(services)
    read = await services.upkeep.rebuild()

    assert read == len(events)
    assert await rollup_rows(services) == recorded
    # And the recorder's rows are right: calls per UTC hour and day, from the events themselves.
    per_hour = Counter(
        e.used_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0) for e in events
    )
    per_day = Counter(
        e.used_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) for e in events
    )
    assert calls_per_period(recorded["hour"], usage_hourly) == per_hour
    assert calls_per_period(recorded["day"], usage_daily) == per_day


async def test_rebuild_replaces_wrong_rollup_rows_instead_of_adding_to_them(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=2, count=120, since=FIRST_WHOLE_RAW_DAY))
    recorded = await rollup_rows(services)
    async with services.database.write() as connection:
        for table in (usage_hourly, usage_daily):
            await connection.execute(table.update().values(calls=table.c.calls * 2 + 1, h05=7))

    await services.upkeep.rebuild()
    assert await rollup_rows(services) == recorded
    await services.upkeep.rebuild()  # idempotent
    assert await rollup_rows(services) == recorded


async def test_rebuild_of_chosen_days_leaves_the_other_days_alone(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=3, count=200))
    recorded = await rollup_rows(services)
    await delete_rollups(services)
    first_day, end = datetime(2030, 3, 16, tzinfo=UTC), datetime(2030, 3, 18, tzinfo=UTC)

    await services.upkeep.rebuild(first_day, end)

    rebuilt = await rollup_rows(services)
    assert rebuilt["hour"] == [row for row in recorded["hour"] if first_day <= row[0] < end]
    assert rebuilt["day"] == [row for row in recorded["day"] if first_day <= row[0] < end]


async def test_rebuild_of_an_empty_raw_table_reads_nothing_and_keeps_rollups(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=4, count=20))
    recorded = await rollup_rows(services)
    async with services.database.write() as connection:
        await connection.execute(token_usage_logs.delete())

    assert await services.upkeep.rebuild() == 0
    assert await rollup_rows(services) == recorded


# -- retention -------------------------------------------------------------------------------


async def test_prune_deletes_raw_rows_older_than_raw_days_and_keeps_the_rest(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    events = make_events(token_hashes, seed=5, count=250)
    await insert(services, events)

    result = await services.upkeep.prune(NOW)

    expected = sorted(e.used_at.astimezone(UTC) for e in events if e.used_at >= RAW_CUTOFF)
    assert await raw_moments(services) == expected
    assert result.raw_rows == len(events) - len(expected)
    assert RAW_CUTOFF in expected  # a row exactly raw_days old is kept


async def test_prune_deletes_rollup_rows_before_the_day_rollup_days_ago(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=6, count=250))
    recorded = await rollup_rows(services)

    result = await services.upkeep.prune(NOW)

    kept = {
        period: [row for row in rows if row[0] >= ROLLUP_CUTOFF]
        for period, rows in recorded.items()
    }
    assert await rollup_rows(services) == kept
    dropped = sum(len(recorded[period]) - len(kept[period]) for period in recorded)
    assert dropped > 0
    assert result.rollup_rows == dropped


async def test_prune_deletes_raw_rows_in_bounded_chunks_oldest_first(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    events = make_events(token_hashes, seed=7, count=100)
    await insert(services, events)
    old = sum(e.used_at < RAW_CUTOFF for e in events)

    deleted = await maintenance.delete_raw_before(services.database, RAW_CUTOFF, chunk_rows=7)

    assert deleted == old
    assert min(await raw_moments(services)) >= RAW_CUTOFF


async def test_prune_twice_deletes_nothing_more(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=8, count=100))
    await services.upkeep.prune(NOW)
    after_first = (await raw_moments(services), await rollup_rows(services))

    result = await services.upkeep.prune(NOW)

    assert (result.raw_rows, result.rollup_rows) == (0, 0)
    assert (await raw_moments(services), await rollup_rows(services)) == after_first


async def test_figures_inside_rollup_retention_survive_pruning_the_raw_rows(
    services: Services, admin: Actor, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=9, count=300))
    # From the rollup cutoff to before the raw cutoff: all of it outlives its raw rows.
    window = Window(ROLLUP_CUTOFF, datetime(2030, 3, 14, 9, tzinfo=UTC))
    token_id = token_hashes[0][1]

    async def figures() -> list[Any]:
        stats = await services.analytics.stats(admin, window, bucket="day")
        hourly = await services.analytics.stats(admin, window, bucket="hour")
        token = await services.analytics.token_usage(admin, token_id, window, limit=1, offset=0)
        route = await services.analytics.route_usage(admin, "/a", window)
        token_stats = {
            k: v for k, v in token["stats"].items() if k not in {"first_used", "last_used"}
        }
        return [
            stats["overview"],
            stats["hourly_usage"],
            stats["top_tokens"],
            stats["top_routes"],
            hourly["hourly_usage"],
            token_stats,
            token["route_distribution"],
            token["time_profile"],
            route["stats"],
            route["token_distribution"],
            route["latency_trend"],
        ]

    before = await figures()
    assert before[0]["total_calls"] > 0
    result = await services.upkeep.prune(NOW)
    assert result.raw_rows > 0

    assert await figures() == before


async def test_rebuild_after_pruning_keeps_the_rollups_of_partly_pruned_days(
    services: Services, admin: Actor, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=10, count=300))
    await services.upkeep.prune(NOW)
    pruned = await rollup_rows(services)
    # The raw cutoff (09:40) cut its day in two: its raw rows are no longer the whole day.
    assert any(row[0] == RAW_CUTOFF.replace(hour=0, minute=0) for row in pruned["day"])

    await services.upkeep.rebuild()

    assert await rollup_rows(services) == pruned


async def test_rebuild_since_a_day_past_raw_retention_keeps_that_days_rollups(
    services: Services, token_hashes: list[tuple[str, int]]
) -> None:
    await insert(services, make_events(token_hashes, seed=11, count=300))
    await services.upkeep.prune(NOW)
    pruned = await rollup_rows(services)

    await services.upkeep.rebuild(since=ROLLUP_CUTOFF)

    assert await rollup_rows(services) == pruned
