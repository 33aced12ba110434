"""`tokenmanager usage generate` as a real subprocess: written straight to the store (SQLite and
PostgreSQL) through the usage write path, or posted to a running control plane with an ingest
key; bad input refused with the documented exit codes."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.conftest import Cli, cli_environment, message
from tokenmanager.access.actor import Actor
from tokenmanager.api.app import create_app
from tokenmanager.composition import Services, build_services
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs, tokens, usage_daily, usage_hourly
from tokenmanager.testing import copy_sqlite_template, make_settings, running_asgi_server
from tokenmanager.tokens.codec import hash_token

SINCE = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 8, 0, 0, tzinfo=UTC)
SPAN = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
DEADLINE_S = 60


async def issue_tokens(services: Services, admin: Actor, count: int) -> list[tuple[int, str]]:
    await services.teams.create(admin, team_id="gen-team", name="Gen")
    issued = []
    for index in range(count):
        token = await services.tokens.issue(admin, name=f"gen-{index}", team_id="gen-team")
        issued.append((token.token.id, hash_token(token.token_secret)))
    return issued


async def stored_counts(services: Services) -> dict[str, int]:
    async with services.database.read() as connection:
        raw = await connection.scalar(sa.select(sa.func.count()).select_from(token_usage_logs))
        raw_errors = await connection.scalar(
            sa.select(sa.func.count()).where(
                sa.or_(
                    token_usage_logs.c.response_status >= 400,
                    token_usage_logs.c.failure_kind.is_not(None),
                )
            )
        )
        hourly = await connection.scalar(sa.select(sa.func.sum(usage_hourly.c.calls)))
        daily = await connection.scalar(sa.select(sa.func.sum(usage_daily.c.calls)))
        hourly_errors = await connection.scalar(sa.select(sa.func.sum(usage_hourly.c.errors)))
    return {
        "raw": int(raw or 0),
        "raw_errors": int(raw_errors or 0),
        "hourly": int(hourly or 0),
        "daily": int(daily or 0),
        "hourly_errors": int(hourly_errors or 0),
    }


async def test_generate_writes_events_with_rollups_and_is_idempotent_per_seed(
    services: Services, admin: Actor, tmp_path: Path, database_url: str
) -> None:
    chosen = (await issue_tokens(services, admin, 3))[:2]
    cli = Cli(cli_environment(tmp_path, database_url))
    arguments = [
        "usage", "generate", "--events", "3000", "--seed", "11", *SPAN,
        "--route", "/api/a", "--route", "/api/b",
        *(part for token_id, _ in chosen for part in ("--token", str(token_id))),
    ]  # fmt: skip
    result = await asyncio.to_thread(cli, *arguments)
    assert result.returncode == 0, result.stderr
    assert "3000 event(s) for 2 token(s) written to the store" in " ".join(result.stdout.split())
    assert "3000 new" in result.stdout

    counts = await stored_counts(services)
    assert counts["raw"] == counts["hourly"] == counts["daily"] == 3000
    assert counts["raw_errors"] == counts["hourly_errors"]
    assert 0.005 * 3000 < counts["raw_errors"] < 0.05 * 3000
    async with services.database.read() as connection:
        rows = (
            await connection.execute(
                sa.select(
                    token_usage_logs.c.token_id,
                    token_usage_logs.c.token_hash,
                    token_usage_logs.c.route_path,
                    sa.func.min(token_usage_logs.c.used_at),
                    sa.func.max(token_usage_logs.c.used_at),
                ).group_by(
                    token_usage_logs.c.token_id,
                    token_usage_logs.c.token_hash,
                    token_usage_logs.c.route_path,
                )
            )
        ).all()
        last_used = dict(
            (await connection.execute(sa.select(tokens.c.id, tokens.c.last_used))).all()
        )
    assert {(row[0], row[1]) for row in rows} <= set(chosen)
    assert {row[2] for row in rows} <= {"/api/a", "/api/b"}
    assert all(row[3] >= SINCE and row[4] < UNTIL for row in rows)
    for token_id, _ in chosen:
        assert last_used[token_id] is not None
        assert SINCE <= last_used[token_id] < UNTIL

    again = await asyncio.to_thread(cli, *arguments)
    assert again.returncode == 0, again.stderr
    assert "(0 new)" in again.stdout  # the same seed and span: the same event ids
    assert (await stored_counts(services))["raw"] == 3000


async def test_generate_defaults_to_every_active_token_and_route(
    services: Services, admin: Actor, tmp_path: Path, database_url: str
) -> None:
    issued = await issue_tokens(services, admin, 2)
    await services.routes.create(admin, path_prefix="/api/only", upstream_url="https://example.com")
    cli = Cli(cli_environment(tmp_path, database_url))
    result = await asyncio.to_thread(cli, "usage", "generate", "-n", "500", "--window", "7d")
    assert result.returncode == 0, result.stderr
    async with services.database.read() as connection:
        seen = (
            await connection.execute(
                sa.select(token_usage_logs.c.token_id, token_usage_logs.c.route_path).distinct()
            )
        ).all()
    assert {token_id for token_id, _ in seen} == {token_id for token_id, _ in issued}
    assert {route for _, route in seen} == {"/api/only"}


async def test_generate_plants_anomalies_the_detectors_then_find(
    services: Services, admin: Actor, tmp_path: Path, database_url: str
) -> None:
    issued = await issue_tokens(services, admin, 3)
    cli = Cli(cli_environment(tmp_path, database_url))
    result = await asyncio.to_thread(
        cli, "usage", "generate", "-n", "4000", "--seed", "5", "--window", "7d",
        "--route", "/api/a", "--route", "/api/b",
        "--inject", "new_network", "--inject", "rate_limit_burst",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = " ".join(result.stdout.split())
    planted = dict(re.findall(r"planted (\w+): \d+ planted calls \(token (\d+)\)", output))
    assert set(planted) == {"new_network", "rate_limit_burst"}
    assert {int(token_id) for token_id in planted.values()} <= {id_ for id_, _ in issued}

    since = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    detected = await asyncio.to_thread(cli, "security", "run", "--since", since, "--json")
    assert detected.returncode == 0, detected.stderr

    findings, _ = await services.security.findings.list(admin, limit=500)
    # What was planted, and nothing in the normal traffic around it.
    assert sorted((f.kind, f.token_id) for f in findings) == sorted(
        (kind, int(token_id)) for kind, token_id in planted.items()
    )
    new_network = next(f for f in findings if f.kind == "new_network")
    assert new_network.ip_address == "45.77.3.19"
    assert new_network.evidence["network"] == "45.77.3.0/24"
    rate_limited = next(f for f in findings if f.kind == "rate_limit_burst")
    assert rate_limited.evidence["by_status"] == {"429": rate_limited.evidence["count"]}


@dataclass(frozen=True)
class OnSqlite:
    """For tests of the command's own logic and of posting: the store under them is tested on
    both backends above."""

    url: str
    settings: Settings
    services: Services


@pytest.fixture
async def on_sqlite(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[OnSqlite]:
    url = copy_sqlite_template(sqlite_template, tmp_path / "generate.db")
    settings = make_settings(tmp_path / "data", url)
    services = build_services(settings)
    yield OnSqlite(url, settings, services)
    await services.close()


async def run_cli(environment: dict[str, str], *args: str, stdin: str) -> tuple[int, str, str]:
    """The CLI without blocking this event loop, which serves the control plane meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenmanager", *args,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), DEADLINE_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), " ".join(err.decode().split())


async def test_generate_posts_to_a_running_instance_with_an_ingest_key(
    on_sqlite: OnSqlite, admin: Actor, tmp_path: Path
) -> None:
    settings, services = on_sqlite.settings, on_sqlite.services
    (token_id, token_hash), *_ = await issue_tokens(services, admin, 1)
    key = await services.ingest_keys.create(admin, name="generator")
    unknown_hash = "ab" * 32
    # The CLI needs no database for --url: point it at one that does not exist.
    environment = cli_environment(tmp_path / "elsewhere", f"sqlite:///{tmp_path / 'none.db'}")
    async with running_asgi_server(create_app(settings, services)) as base_url:
        arguments = [
            "usage", "generate", "-n", "2500", "--seed", "3", *SPAN, "--url", base_url,
            "--token-hash", token_hash, "--token-hash", unknown_hash.upper(),
            "--route", "/api/posted", "--ingest-key-stdin",
        ]  # fmt: skip
        code, out, err = await run_cli(environment, *arguments, stdin=key.key_secret + "\n")
        assert code == 0, err
        assert "2500 accepted, 0 rejected" in " ".join(out.split())

        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while (await stored_counts(services))["raw"] < 2500:
            assert asyncio.get_running_loop().time() < deadline, "posted events never stored"
            await asyncio.sleep(0.05)

        code, _, err = await run_cli(environment, *arguments, stdin="tik_wrong\n")
        assert code == 6
        assert "refused the ingest key" in err
        assert "tik_wrong" not in err

    counts = await stored_counts(services)
    assert counts["raw"] == counts["hourly"] == 2500  # the first post, once
    async with services.database.read() as connection:
        by_token = dict(
            (
                await connection.execute(
                    sa.select(token_usage_logs.c.token_hash, token_usage_logs.c.token_id)
                    .distinct()
                    .where(token_usage_logs.c.source == "ingest")
                )
            ).all()
        )
    assert by_token == {token_hash: token_id, unknown_hash: None}


@pytest.mark.parametrize(
    ("arguments", "code", "text"),
    [
        (["--url", "http://127.0.0.1:9", "--route", "/a"], 2, "--token-hash"),
        (["--url", "http://127.0.0.1:9", "--token-hash", "ab" * 32], 2, "--route"),
        (["--url", "ftp://x", "--token-hash", "ab" * 32, "--route", "/a"], 2, "http://"),
        (["--url", "http://127.0.0.1:9", "--token", "1", "--route", "/a"], 2, "--token-hash"),
        (["--token-hash", "xyz", "--route", "/a"], 2, "64 hexadecimal"),
        (["--window", "7d", "--since", "2026-11-01"], 2, "either --window"),
        (["--window", "2d"], 2, "--window must be one of"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], 2, "--since must be before"),
        (["--until", (datetime.now(UTC) + timedelta(days=2)).isoformat()], 2, "future"),
        (["--token", "999", "--route", "/a"], 3, "token 999 not found"),
        (["--route", "/a"], 3, "no active tokens"),
        (["--events", "0"], 2, "--events"),
        (["--inject", "route_error_spike", "--route", "/a"], 2, "cannot be planted"),
        (["--inject", "new_network", "--window", "24h", "--route", "/a"], 2, "at least 7 days"),
    ],
)
def test_generate_refuses_bad_input(
    on_sqlite: OnSqlite, tmp_path: Path, arguments: list[str], code: int, text: str
) -> None:
    result = Cli(cli_environment(tmp_path, on_sqlite.url))("usage", "generate", *arguments)
    assert result.returncode == code, result.stderr
    assert text in message(result)


async def test_generate_without_routes_names_the_fix(
    on_sqlite: OnSqlite, admin: Actor, tmp_path: Path
) -> None:
    await issue_tokens(on_sqlite.services, admin, 1)
    result = await asyncio.to_thread(
        Cli(cli_environment(tmp_path, on_sqlite.url)), "usage", "generate"
    )
    assert result.returncode == 3
    assert "no routes" in message(result)


async def test_generate_to_an_unreachable_instance_exits_naming_it(tmp_path: Path) -> None:
    from tokenmanager.testing import free_port

    url = f"http://127.0.0.1:{free_port()}"
    environment = cli_environment(tmp_path)
    code, _, err = await run_cli(
        environment,
        "usage", "generate", "-n", "10", "--url", url, "--token-hash", "ab" * 32,
        "--route", "/a", "--ingest-key-stdin",
        stdin="tik_whatever\n",
    )  # fmt: skip
    assert code == 5
    assert "cannot post to" in err
    assert url in err
