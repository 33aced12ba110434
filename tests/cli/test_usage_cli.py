"""`tokenmanager usage export|prune` and `tokenmanager rollup rebuild`, run as subprocesses on
SQLite and PostgreSQL. Usage is recorded in-process through the services' recorder; what is
under test goes through the command."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.analytics.service import RAW_FIELDS
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.storage.schema import token_usage_logs, usage_daily, usage_hourly
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.rollup import hour_of

from .conftest import Cli, message

UNKNOWN_TOKEN_HASH = "cd" * 32


def recent() -> datetime:
    """Two hours ago: inside the export's default 24-hour window however the hour turns."""
    return hour_of(utcnow()) - timedelta(hours=2)


def call(
    token: IssuedToken | None, at: datetime, route: str = "/api/openai", **fields: Any
) -> UsageEvent:
    """A gateway call by `token` (None: a hash no token has)."""
    values: dict[str, Any] = {"response_status": 200, "response_time_ms": 120} | fields
    return UsageEvent(
        token_hash=UNKNOWN_TOKEN_HASH if token is None else hash_token(token.token_secret),
        token_id=None if token is None else token.token.id,
        route_path=route,
        used_at=at,
        **values,
    )


async def record(services: Services, events: Iterable[UsageEvent]) -> None:
    """Store `events` the way the gateway does, through the recorder."""
    events = list(events)
    for event in events:
        assert services.recorder.record(event)
    await services.recorder.flush()
    assert services.recorder.stats.written >= len(events)
    assert services.recorder.stats.spooled == 0


async def raw_event_ids(services: Services) -> set[str]:
    async with services.database.read() as connection:
        return set((await connection.execute(sa.select(token_usage_logs.c.event_id))).scalars())


async def rollup_rows(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of both rollup tables, in key order."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with services.database.read() as connection:
        for table in (usage_hourly, usage_daily):
            query = table.select().order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in await connection.execute(query)]
    return rows


@pytest.fixture
async def tokens(services: Services, admin: Actor) -> dict[str, IssuedToken]:
    for team_id in ("team-a", "team-b"):
        await services.teams.create(admin, team_id=team_id, name=team_id)
    return {
        "alpha": await services.tokens.issue(admin, name="alpha", team_id="team-a"),
        "bravo": await services.tokens.issue(admin, name="bravo", team_id="team-b"),
    }


@pytest.fixture
async def recent_calls(services: Services, tokens: dict[str, IssuedToken]) -> list[UsageEvent]:
    """Five calls in the last hours: alpha on two routes, bravo, and an unknown token."""
    start = recent()
    minute = timedelta(minutes=1)
    events = [
        call(tokens["alpha"], start + 1 * minute),
        call(tokens["alpha"], start + 2 * minute, response_status=500, error_message="boom"),
        call(tokens["alpha"], start + 3 * minute, route="/api/embed", response_time_ms=None),
        call(tokens["bravo"], start + 4 * minute, route="/api/aws", response_time_ms=80),
        call(None, start + 5 * minute, ip_address="1.2.3.4", user_agent="n8n/1.0"),
    ]
    await record(services, events)
    return events


# usage export


def exported_event_ids(text: str, export_format: str) -> list[str]:
    if export_format == "csv":
        return [row["event_id"] for row in csv.DictReader(io.StringIO(text))]
    return [json.loads(line)["event_id"] for line in text.splitlines()]


@pytest.mark.parametrize("export_format", ["csv", "ndjson"])
def test_export_writes_every_record_of_the_window_to_the_file(
    cli: Cli, tmp_path: Path, recent_calls: list[UsageEvent], export_format: str
) -> None:
    output = tmp_path / f"usage.{export_format}"

    result = cli("usage", "export", "-o", str(output), "--format", export_format)

    assert result.returncode == 0, result.stderr
    assert f"Wrote {len(recent_calls)} record(s)" in message(result)
    text = output.read_text(encoding="utf-8")
    assert exported_event_ids(text, export_format) == [e.event_id for e in recent_calls]
    if export_format == "csv":
        assert text.splitlines()[0] == ",".join(RAW_FIELDS)
        assert len(text.splitlines()) == 1 + len(recent_calls)
    else:
        first = json.loads(text.splitlines()[0])
        assert list(first) == list(RAW_FIELDS)
        assert (first["route_path"], first["response_status"]) == ("/api/openai", 200)


def test_export_csv_keeps_the_seed_fields_of_each_record(
    cli: Cli, tmp_path: Path, recent_calls: list[UsageEvent]
) -> None:
    output = tmp_path / "usage.csv"

    assert cli("usage", "export", "-o", str(output)).returncode == 0

    rows = {row["event_id"]: row for row in csv.DictReader(io.StringIO(output.read_text()))}
    unknown = rows[recent_calls[-1].event_id]
    assert (unknown["token_hash"], unknown["token_id"]) == (UNKNOWN_TOKEN_HASH, "")
    assert (unknown["ip_address"], unknown["user_agent"]) == ("1.2.3.4", "n8n/1.0")
    assert datetime.fromisoformat(unknown["used_at"]) == recent_calls[-1].used_at
    failed = rows[recent_calls[1].event_id]
    assert (failed["response_status"], failed["error_message"]) == ("500", "boom")


@pytest.mark.parametrize("export_format", ["csv", "ndjson"])
def test_export_to_dash_writes_to_standard_output(
    cli: Cli, recent_calls: list[UsageEvent], export_format: str
) -> None:
    result = cli("usage", "export", "-o", "-", "--format", export_format)

    assert result.returncode == 0, result.stderr
    assert exported_event_ids(result.stdout, export_format) == [e.event_id for e in recent_calls]
    assert "Wrote" not in result.stdout  # the summary and progress go to standard error


def test_export_applies_team_route_and_token_filters(
    cli: Cli, recent_calls: list[UsageEvent], tokens: dict[str, IssuedToken]
) -> None:
    def exported(*filters: str) -> list[str]:
        result = cli("usage", "export", "-o", "-", "--format", "ndjson", *filters)
        assert result.returncode == 0, result.stderr
        return exported_event_ids(result.stdout, "ndjson")

    alpha_id = tokens["alpha"].token.id
    assert exported("--team", "team-b") == [recent_calls[3].event_id]
    assert exported("--route", "/api/embed") == [recent_calls[2].event_id]
    assert exported("--token", str(alpha_id)) == [e.event_id for e in recent_calls[:3]]


async def test_export_window_leaves_out_older_records(
    cli: Cli, tmp_path: Path, services: Services, tokens: dict[str, IssuedToken]
) -> None:
    old = call(tokens["alpha"], recent() - timedelta(days=3))
    new = call(tokens["alpha"], recent())
    await record(services, [old, new])

    def exported(*window: str) -> list[str]:
        result = cli("usage", "export", "-o", "-", "--format", "ndjson", *window)
        assert result.returncode == 0, result.stderr
        return exported_event_ids(result.stdout, "ndjson")

    assert exported() == [new.event_id]
    assert exported("--window", "7d") == [old.event_id, new.event_id]
    since = (old.used_at - timedelta(hours=1)).isoformat()
    until = (old.used_at + timedelta(hours=1)).isoformat()
    assert exported("--since", since, "--until", until) == [old.event_id]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--format", "xlsx"], "--format"),
        (["--window", "90d"], "--window"),
        (["--window", "7d", "--since", "2025-01-01T00:00:00"], "--window"),
        (["--since", "2025-01-02T00:00:00", "--until", "2025-01-01T00:00:00"], "--since"),
    ],
    ids=["format", "window", "window-and-since", "since-after-until"],
)
def test_export_with_bad_options_exits_2_and_writes_nothing(
    cli: Cli, tmp_path: Path, arguments: list[str], named: str
) -> None:
    output = tmp_path / "usage.out"

    result = cli("usage", "export", "-o", str(output), *arguments)

    assert result.returncode == 2
    assert named in message(result)
    assert not output.exists()


@pytest.mark.parametrize("target", ["missing-directory/usage.csv", "."], ids=["no-dir", "a-dir"])
def test_export_to_an_unwritable_path_exits_2(cli: Cli, tmp_path: Path, target: str) -> None:
    result = cli("usage", "export", "-o", str(tmp_path / target))

    assert result.returncode == 2
    assert "cannot write" in message(result)


# usage prune


async def test_prune_deletes_raw_rows_past_the_retention_and_keeps_newer_ones(
    cli: Cli, services: Services, tokens: dict[str, IssuedToken]
) -> None:
    old = call(tokens["alpha"], utcnow() - timedelta(days=3))
    kept = call(tokens["alpha"], utcnow() - timedelta(hours=1))
    await record(services, [old, kept])
    rollups_before = await rollup_rows(services)

    result = cli("usage", "prune", env={"TOKENMANAGER_RETENTION_RAW_DAYS": "1"})

    assert result.returncode == 0, result.stderr
    assert "Deleted 1 raw row(s) and 0 rollup row(s)" in " ".join(result.stdout.split())
    assert await raw_event_ids(services) == {kept.event_id}
    assert await rollup_rows(services) == rollups_before  # the figures outlive the raw rows


async def test_prune_with_the_default_retention_keeps_recent_rows(
    cli: Cli, services: Services, tokens: dict[str, IssuedToken]
) -> None:
    events = [call(tokens["alpha"], utcnow() - timedelta(days=days)) for days in (3, 29)]
    await record(services, events)

    result = cli("usage", "prune")

    assert result.returncode == 0, result.stderr
    assert "Deleted 0 raw row(s)" in result.stdout
    assert await raw_event_ids(services) == {event.event_id for event in events}


# rollup rebuild


@pytest.fixture
async def calls_over_days(services: Services, tokens: dict[str, IssuedToken]) -> None:
    """Calls over three days and several hours: statuses, a missing latency, byte counts, an
    unknown token, two calls sharing one rollup row."""
    now = hour_of(utcnow())
    alpha, bravo = tokens["alpha"], tokens["bravo"]
    await record(
        services,
        [
            call(alpha, now - timedelta(days=2, minutes=50), response_time_ms=30),
            call(alpha, now - timedelta(days=2, minutes=40), response_time_ms=45_000),
            call(alpha, now - timedelta(days=1, hours=5), response_status=503, bytes_out=900),
            call(bravo, now - timedelta(days=1, hours=5), route="/api/aws", bytes_in=12),
            call(bravo, now - timedelta(hours=3), route="/api/aws", response_status=404),
            call(bravo, now - timedelta(hours=3), route="/api/aws", failure_kind="rate_limited"),
            call(None, now - timedelta(hours=1), response_time_ms=None, response_status=None),
            call(alpha, now - timedelta(minutes=30), route="/api/embed", response_time_ms=2),
        ],
    )


async def damage(services: Services, how: str) -> None:
    async with services.database.write() as connection:
        for table in (usage_hourly, usage_daily):
            if how == "deleted":
                await connection.execute(table.delete())
            else:
                await connection.execute(table.update().values(calls=999, sum_latency_ms=0))


@pytest.mark.parametrize("how", ["deleted", "corrupted"])
async def test_rollup_rebuild_recreates_what_the_recorder_wrote(
    cli: Cli, services: Services, calls_over_days: None, how: str
) -> None:
    written = await rollup_rows(services)
    assert written["usage_hourly"]
    assert written["usage_daily"]
    await damage(services, how)
    assert await rollup_rows(services) != written

    result = cli("rollup", "rebuild")

    assert result.returncode == 0, result.stderr
    assert "Rebuilt the rollups from 8 raw row(s)" in result.stdout
    assert await rollup_rows(services) == written


async def test_rollup_rebuild_since_a_day_rebuilds_only_from_that_day_on(
    cli: Cli, services: Services, calls_over_days: None
) -> None:
    written = await rollup_rows(services)
    last_day = max(row[0] for row in written["usage_daily"])
    await damage(services, "deleted")

    result = cli("rollup", "rebuild", "--since", last_day.isoformat())

    assert result.returncode == 0, result.stderr
    rebuilt = await rollup_rows(services)
    for table, rows in written.items():
        assert rebuilt[table] == [row for row in rows if row[0] >= last_day]
    assert rebuilt["usage_daily"]
    assert len(rebuilt["usage_daily"]) < len(written["usage_daily"])


def test_rollup_rebuild_without_usage_reads_nothing(cli: Cli) -> None:
    result = cli("rollup", "rebuild")

    assert result.returncode == 0, result.stderr
    assert "from 0 raw row(s)" in result.stdout


# usage reprice


async def raw_costs(services: Services) -> list[int | None]:
    async with services.database.read() as connection:
        query = sa.select(token_usage_logs.c.cost_pusd).order_by(token_usage_logs.c.used_at)
        return list((await connection.execute(query)).scalars())


async def test_usage_reprice_recomputes_costs_at_todays_prices_and_fixes_the_sums(
    cli: Cli, services: Services, tokens: dict[str, IssuedToken]
) -> None:
    start = recent()
    llm = {"usage_source": "reported", "prompt_tokens": 1000, "completion_tokens": 100}
    await record(
        services,
        [
            # Recorded at yesterday's prices (1 and 7 pico-dollars).
            call(
                tokens["alpha"],
                start + timedelta(minutes=1),
                model="gpt-4o-mini",
                cost_pusd=1,
                **llm,
            ),
            call(
                tokens["bravo"],
                start + timedelta(minutes=2),
                model="no-such-model",
                cost_pusd=7,
                **llm,
            ),
            call(tokens["bravo"], start + timedelta(minutes=3)),  # not an LLM call
        ],
    )
    assert await raw_costs(services) == [1, 7, None]  # recording never reprices

    result = cli("usage", "reprice", "--since", (start - timedelta(hours=1)).isoformat())

    assert result.returncode == 0, result.stderr
    assert "Repriced 2 LLM call(s); the cost of 2 changed." in result.stdout
    mini_cost_pusd = 1000 * 150_000 + 100 * 600_000  # the default gpt-4o-mini price
    assert await raw_costs(services) == [mini_cost_pusd, None, None]
    async with services.database.read() as connection:
        for table in (usage_hourly, usage_daily):
            query = sa.select(sa.func.sum(table.c.cost_pusd), sa.func.sum(table.c.unpriced_calls))
            assert tuple((await connection.execute(query)).one()) == (mini_cost_pusd, 1)

    again = cli("usage", "reprice", "--since", (start - timedelta(hours=1)).isoformat())
    assert "the cost of 0 changed" in again.stdout


def test_usage_reprice_needs_since_and_an_until_after_it(cli: Cli) -> None:
    assert cli("usage", "reprice").returncode == 2
    result = cli("usage", "reprice", "--since", "2030-01-02", "--until", "2030-01-01")
    assert result.returncode == 2
    assert "--until" in message(result)
