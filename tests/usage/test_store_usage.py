"""The usage store on both backends: the batched insert is idempotent on event_id, resolves
token ids (also from a rotated-out hash), moves tokens.last_used forward only, and keeps
usage_hourly (and usage_daily) equal to an oracle over the events really inserted."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services, build_recorder
from tokenmanager.storage import usage as usage_sql
from tokenmanager.storage.schema import token_usage_logs, tokens, usage_daily, usage_hourly
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.histogram import BUCKET_COLUMNS, BUCKET_UPPER_BOUNDS_MS
from tokenmanager.usage.spool import REJECTED_DIRECTORY, Spool

TEAM_ID = "usage-team"
T0 = datetime(2030, 3, 1, 22, 30, tzinfo=UTC)  # events span midnight: two days, many hours
UNKNOWN_HASH = "f" * 64
# More rows than one INSERT statement (or one insertmanyvalues page of 1000) holds.
BIG_BATCH = 2500

RollupTable = dict[tuple[Any, ...], dict[str, Any]]


@pytest.fixture
async def token(services: Services, admin: Actor) -> IssuedToken:
    await services.teams.create(admin, team_id=TEAM_ID, name="Usage team")
    return await services.tokens.issue(admin, name="usage", team_id=TEAM_ID, scopes=["echo"])


def make_events(count: int, token_hash: str, *, seed: int = 0, routes: int = 3) -> list[UsageEvent]:
    """Events spread over three hours, several routes and statuses, some without latency."""
    rng = random.Random(seed)
    events = []
    for _ in range(count):
        events.append(
            UsageEvent(
                token_hash=token_hash,
                route_path=f"/r{rng.randrange(routes)}" if rng.random() > 0.1 else None,
                used_at=T0 + timedelta(microseconds=rng.randrange(3 * 3600 * 10**6)),
                response_status=rng.choice([200, 200, 201, 404, 429, 502, None]),
                response_time_ms=rng.choice([None, rng.randrange(0, 200_000), 100, 101]),
                error_message=rng.choice([None, None, "boom"]),
                failure_kind=rng.choice([None, None, None, "timeout"]),
                bytes_in=rng.choice([None, rng.randrange(10_000)]),
                bytes_out=rng.choice([None, rng.randrange(10**9)]),
                request_method="GET",
            )
        )
    return events


def fresh_copies(events: list[UsageEvent]) -> list[UsageEvent]:
    """The same events as a replay would bring them: from their JSON form, token_id unknown."""
    return [UsageEvent.from_json(e.to_json() | {"token_id": None}) for e in events]


def oracle_rollup(
    events: list[UsageEvent], token_ids: dict[str, int | None], period_s: int = 3600
) -> RollupTable:
    """The rollup by hour (or by day with period_s=86400), computed the slow, obvious way."""
    groups: dict[tuple[Any, ...], list[UsageEvent]] = defaultdict(list)
    for event in events:
        epoch_s = int(event.used_at.timestamp())
        hour = datetime.fromtimestamp(epoch_s - epoch_s % period_s, UTC)
        status = event.response_status
        status_class = status // 100 if status is not None and 100 <= status <= 599 else 0
        groups[(hour, event.token_hash, event.route_path or "", status_class)].append(event)
    expected: RollupTable = {}
    for key, members in groups.items():
        latencies = [e.response_time_ms for e in members if e.response_time_ms is not None]
        buckets = [0] * len(BUCKET_COLUMNS)
        for latency in latencies:
            buckets[next(i for i, b in enumerate(BUCKET_UPPER_BOUNDS_MS) if latency <= b)] += 1
        expected[key] = {
            "token_id": token_ids.get(key[1]),
            "calls": len(members),
            "errors": sum(
                1
                for e in members
                if e.failure_kind is not None
                or (e.response_status or 0) >= 400
                or (e.response_status is None and e.error_message is not None)
            ),
            "sum_latency_ms": sum(latencies),
            "max_latency_ms": max(latencies, default=0),
            "bytes_in": sum(e.bytes_in or 0 for e in members),
            "bytes_out": sum(e.bytes_out or 0 for e in members),
            "buckets": buckets,
        }
    return expected


async def insert(services: Services, events: list[UsageEvent]) -> int:
    async with services.database.write() as connection:
        return await usage_sql.insert_usage_events(connection, events)


async def read_rollup(services: Services, period: str = "hour") -> RollupTable:
    table = usage_hourly if period == "hour" else usage_daily
    async with services.database.read() as connection:
        rows = list(await connection.execute(table.select()))
    return {
        (row._mapping[period], row.token_hash, row.route_path, row.status_class): {
            "token_id": row.token_id,
            "calls": row.calls,
            "errors": row.errors,
            "sum_latency_ms": row.sum_latency_ms,
            "max_latency_ms": row.max_latency_ms,
            "bytes_in": row.bytes_in,
            "bytes_out": row.bytes_out,
            "buckets": [row._mapping[name] for name in BUCKET_COLUMNS],
        }
        for row in rows
    }


async def read_usage_rows(services: Services) -> list[sa.Row[Any]]:
    async with services.database.read() as connection:
        query = token_usage_logs.select().order_by(token_usage_logs.c.id)
        return list(await connection.execute(query))


async def read_last_used(services: Services, token_id: int) -> datetime | None:
    async with services.database.read() as connection:
        query = sa.select(tokens.c.last_used).where(tokens.c.id == token_id)
        value: datetime | None = (await connection.execute(query)).scalar_one()
        return value


async def test_insert_writes_every_event_with_its_columns(
    services: Services, token: IssuedToken
) -> None:
    events = make_events(40, hash_token(token.token_secret))
    events[0].ip_address, events[0].user_agent, events[0].ttfb_ms = "203.0.113.9", "ua/1", 7
    assert await insert(services, fresh_copies(events)) == 40
    rows = {row.event_id: row for row in await read_usage_rows(services)}
    assert set(rows) == {e.event_id for e in events}
    for event in events:
        row = rows[event.event_id]
        for column in ("token_hash", "route_path", "used_at", "response_status"):
            assert row._mapping[column] == getattr(event, column), column
        for column in ("response_time_ms", "bytes_in", "bytes_out", "failure_kind"):
            assert row._mapping[column] == getattr(event, column), column
    first = rows[events[0].event_id]
    assert (first.ip_address, first.user_agent, first.ttfb_ms) == ("203.0.113.9", "ua/1", 7)


async def test_insert_resolves_token_id_from_current_previous_and_unknown_hashes(
    services: Services, admin: Actor, token: IssuedToken
) -> None:
    old_hash = hash_token(token.token_secret)
    rotated = await services.tokens.rotate(admin, token.token.id, grace_s=3600)
    new_hash = hash_token(rotated.token_secret)
    events = [
        *make_events(5, old_hash, seed=1),
        *make_events(5, new_hash, seed=2),
        *make_events(5, UNKNOWN_HASH, seed=3),
    ]
    await insert(services, fresh_copies(events))
    token_id_by_hash = {row.token_hash: row.token_id for row in await read_usage_rows(services)}
    assert token_id_by_hash == {
        old_hash: token.token.id,
        new_hash: token.token.id,
        UNKNOWN_HASH: None,
    }


async def test_insert_sets_last_used_to_the_newest_event_and_never_moves_it_back(
    services: Services, token: IssuedToken
) -> None:
    token_hash = hash_token(token.token_secret)
    events = make_events(30, token_hash)
    await insert(services, fresh_copies(events))
    newest = max(e.used_at for e in events)
    assert await read_last_used(services, token.token.id) == newest

    older = make_events(10, token_hash, seed=9)
    for event in older:
        event.used_at -= timedelta(days=1)
    await insert(services, older)
    assert await read_last_used(services, token.token.id) == newest


async def test_insert_keeps_the_hourly_rollup_equal_to_the_oracle(
    services: Services, admin: Actor, token: IssuedToken
) -> None:
    old_hash = hash_token(token.token_secret)
    rotated = await services.tokens.rotate(admin, token.token.id, grace_s=3600)
    new_hash = hash_token(rotated.token_secret)
    batches = [
        make_events(50, old_hash, seed=1),
        make_events(50, new_hash, seed=2),
        make_events(30, UNKNOWN_HASH, seed=3),
        make_events(50, new_hash, seed=4),  # adds to rows the earlier batches created
    ]
    for batch in batches:
        await insert(services, fresh_copies(batch))
    everything = [event for batch in batches for event in batch]
    token_ids = {old_hash: token.token.id, new_hash: token.token.id, UNKNOWN_HASH: None}
    assert await read_rollup(services) == oracle_rollup(everything, token_ids)
    daily = oracle_rollup(everything, token_ids, period_s=86400)
    assert await read_rollup(services, "day") == daily


async def test_the_rollup_puts_latencies_at_every_bucket_bound_and_statuses_at_every_edge_right(
    services: Services, token: IssuedToken
) -> None:
    """PostgreSQL computes the rollup deltas in SQL, SQLite in Python: both must count a
    latency equal to a bucket's upper bound in that bucket, one more in the next, and class
    and count as errors the statuses at and beyond 1xx-5xx's edges, missing ones too."""
    token_hash = hash_token(token.token_secret)
    bounds = [int(bound) for bound in BUCKET_UPPER_BOUNDS_MS if bound != float("inf")]
    latencies = sorted({0, 10**6, *bounds, *(b + 1 for b in bounds), *(b - 1 for b in bounds)})
    statuses = [None, 99, 100, 199, 200, 399, 400, 599, 600, 200, 502]
    events = [
        UsageEvent(
            token_hash=token_hash,
            route_path=None if index % 5 == 0 else "/edge",
            used_at=T0 + timedelta(minutes=2 * index),  # across midnight: two days
            response_status=statuses[index % len(statuses)],
            response_time_ms=latency,
            error_message="boom" if index % 3 == 0 else None,
            failure_kind="timeout" if index % 7 == 0 else None,
            bytes_in=index,
            bytes_out=None if index % 2 else 10 * index,
        )
        for index, latency in enumerate([*latencies, None, None])
    ]
    assert await insert(services, events) == len(events)
    token_ids = {token_hash: token.token.id}
    assert await read_rollup(services) == oracle_rollup(events, token_ids)
    assert await read_rollup(services, "day") == oracle_rollup(events, token_ids, period_s=86400)


async def test_inserting_the_same_batch_again_inserts_nothing_and_keeps_the_rollup(
    services: Services, token: IssuedToken
) -> None:
    token_hash = hash_token(token.token_secret)
    events = make_events(60, token_hash)
    assert await insert(services, fresh_copies(events)) == 60
    rollup = await read_rollup(services)
    last_used = await read_last_used(services, token.token.id)

    daily = await read_rollup(services, "day")
    assert await insert(services, fresh_copies(events)) == 0
    assert len(await read_usage_rows(services)) == 60
    assert await read_rollup(services) == rollup
    assert await read_rollup(services, "day") == daily
    assert await read_last_used(services, token.token.id) == last_used


async def test_a_partly_replayed_batch_adds_only_its_new_events(
    services: Services, token: IssuedToken
) -> None:
    token_hash = hash_token(token.token_secret)
    first, second = make_events(40, token_hash, seed=1), make_events(25, token_hash, seed=2)
    await insert(services, fresh_copies(first))
    # A replayed batch: half already stored, the rest new, and one event twice in it.
    mixed = fresh_copies(first[:20]) + fresh_copies(second) + fresh_copies(second[:1])
    assert await insert(services, mixed) == 25
    rows = await read_usage_rows(services)
    assert len(rows) == 65
    assert len({row.event_id for row in rows}) == 65
    expected = oracle_rollup(first + second, {token_hash: token.token.id})
    assert await read_rollup(services) == expected


async def test_concurrent_batches_over_the_same_tokens_add_up_without_deadlock(
    services: Services, admin: Actor, token: IssuedToken
) -> None:
    """The recorder writes several batches at once. Batches over the same rollup rows and
    tokens wait for each other's row locks (taken in key order, so never in a cycle) and add
    up exactly."""
    issued = [token] + [
        await services.tokens.issue(admin, name=f"busy-{n}", team_id=TEAM_ID, scopes=["echo"])
        for n in range(3)
    ]
    hashes = [hash_token(t.token_secret) for t in issued]
    batches = []
    for seed in range(8):
        batch = [e for h in hashes for e in make_events(40, h, seed=seed, routes=4)]
        random.Random(seed).shuffle(batch)  # each batch meets the rows in another order
        batches.append(batch)
    written = await asyncio.gather(*(insert(services, batch) for batch in batches))
    everything = [event for batch in batches for event in batch]
    assert sum(written) == len(everything)
    token_ids = {h: t.token.id for h, t in zip(hashes, issued, strict=True)}
    assert await read_rollup(services) == oracle_rollup(everything, token_ids)
    assert await read_rollup(services, "day") == oracle_rollup(everything, token_ids, 86400)
    for token_hash, one in zip(hashes, issued, strict=True):
        newest = max(e.used_at for e in everything if e.token_hash == token_hash)
        assert await read_last_used(services, one.token.id) == newest


async def test_a_batch_bigger_than_one_statement_is_written_whole(
    services: Services, token: IssuedToken
) -> None:
    token_hash = hash_token(token.token_secret)
    count = BIG_BATCH
    # Many routes, so the rollup upsert needs several statements too.
    events = make_events(count, token_hash, routes=1000)
    assert len({(e.route_path, e.used_at.hour) for e in events}) > 1000
    assert await insert(services, fresh_copies(events)) == count
    rows = await read_usage_rows(services)
    assert len({row.event_id for row in rows}) == count
    assert await read_rollup(services) == oracle_rollup(events, {token_hash: token.token.id})
    assert await insert(services, fresh_copies(events)) == 0


async def test_insert_of_an_empty_batch_does_nothing(services: Services) -> None:
    assert await insert(services, []) == 0
    assert await read_usage_rows(services) == []


async def test_a_refused_batch_does_not_stop_later_batches_on_the_same_connection(
    services: Services, token: IssuedToken
) -> None:
    token_hash = hash_token(token.token_secret)
    refused = make_events(3, token_hash, seed=1)
    refused[1].token_hash = None  # type: ignore[assignment] # violates NOT NULL: the batch fails
    with pytest.raises(Exception):  # noqa: B017, PT011 - each backend words it its own way
        await insert(services, refused)
    assert await read_usage_rows(services) == []
    later = make_events(5, token_hash, seed=2)
    assert await insert(services, fresh_copies(later)) == 5
    assert await insert(services, fresh_copies(later)) == 0


async def test_events_that_already_carry_their_token_id_are_stored(
    services: Services, token: IssuedToken
) -> None:
    """The gateway sends events with token_id set, so no look-up runs before the insert."""
    token_hash = hash_token(token.token_secret)
    events = make_events(30, token_hash)
    for event in events:
        event.token_id = token.token.id
    assert await insert(services, events) == 30
    assert len(await read_usage_rows(services)) == 30
    assert await read_rollup(services) == oracle_rollup(events, {token_hash: token.token.id})
    assert await read_last_used(services, token.token.id) == max(e.used_at for e in events)


async def test_stored_times_compare_in_range_queries_as_the_times_they_are(
    services: Services, token: IssuedToken
) -> None:
    """SQLite keeps times as text and compares them as text: the insert must store them in the
    very form SQLAlchemy binds in queries, also for a whole second and for another time zone."""
    token_hash = hash_token(token.token_secret)
    whole_second = datetime(2030, 3, 1, 12, 0, 0, tzinfo=UTC)
    in_taipei = datetime(2030, 3, 1, 20, 0, 0, 1, tzinfo=timezone(timedelta(hours=8)))
    events = make_events(2, token_hash)
    events[0].used_at, events[1].used_at = whole_second, in_taipei
    await insert(services, events)

    async def ids_between(since: datetime, until: datetime) -> set[str]:
        used_at = token_usage_logs.c.used_at
        query = sa.select(token_usage_logs.c.event_id).where(used_at >= since, used_at < until)
        async with services.database.read() as connection:
            return set((await connection.execute(query)).scalars())

    first, second = events[0].event_id, events[1].event_id
    microsecond = timedelta(microseconds=1)
    assert await ids_between(whole_second, whole_second + microsecond) == {first}
    assert await ids_between(whole_second - microsecond, whole_second) == set()
    assert await ids_between(whole_second + microsecond, whole_second + 2 * microsecond) == {second}
    assert await read_last_used(services, token.token.id) == whole_second + microsecond


async def test_the_recorder_sets_aside_only_the_events_the_store_refuses(
    services: Services, token: IssuedToken, tmp_path: Path
) -> None:
    """Through the real write path: a missing token hash breaks NOT NULL everywhere, and a NUL
    byte is a value PostgreSQL's text cannot hold (SQLite stores it)."""
    events = make_events(6, hash_token(token.token_secret))
    events[1].token_hash = None  # type: ignore[assignment]
    refused = {events[1].event_id}
    if services.database.dialect == "postgresql":
        events[4].user_agent = "curl\x00/8"
        refused.add(events[4].event_id)
    spool = Spool(tmp_path / "spool", max_bytes=10**7)
    recorder = build_recorder(services.settings, services.database, spool)
    await recorder.start()
    for event in events:
        recorder.record(event)
    await recorder.flush()  # refused as a batch: spooled, then replayed event by event
    async with asyncio.timeout(30):
        # The recorder's counters are plain fields, not events to wait on.
        while recorder.stats.replayed + recorder.stats.dropped["rejected"] < len(events):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await recorder.stop()
    stored = {row.event_id for row in await read_usage_rows(services)}
    assert stored == {event.event_id for event in events} - refused
    rejected_files = list((tmp_path / "spool" / REJECTED_DIRECTORY).glob("*.ndjson"))
    rejected = {
        json.loads(line)["event_id"] for f in rejected_files for line in f.read_text().splitlines()
    }
    assert rejected == refused
    assert recorder.stats.dropped["rejected"] == len(refused)
