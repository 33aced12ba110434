"""PostgreSQL goes away in the middle of a bounded load (a proxy in front of it is cut for
about a second): afterwards the usage table holds exactly one row per answered call, the
missed writes having gone through the spool and been replayed.

Only the gateway's connections go through the proxy; the shared server keeps running.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services, build_gateway_app
from tokenmanager.settings import Settings
from tokenmanager.storage.engine import parse_database_url
from tokenmanager.storage.schema import token_usage_logs
from tokenmanager.testing import (
    CuttableTcpProxy,
    make_settings,
    running_asgi_server,
    running_mock_upstream,
)

TEAM_ID = "outage-team"
REQUESTS = 300
CONCURRENCY = 10
CUT_AFTER = 100  # answered calls before the store goes away
OUTAGE_REQUESTS = 100  # calls answered while it is away
OUTAGE_MIN_S = 1.0
RECOVERY_DEADLINE_S = 30.0  # replay backs off (0.5 s doubling); the rows must all arrive by then


@pytest.fixture
def backend() -> str:
    """PostgreSQL only: the outage is made by cutting its TCP connections."""
    if not os.environ.get("TOKENMANAGER_TEST_POSTGRES_URL"):
        pytest.skip("set TOKENMANAGER_TEST_POSTGRES_URL to run on PostgreSQL")
    return "postgres"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The control plane's settings: a direct connection, loopback upstreams allowed."""
    return make_settings(tmp_path / "control", database_url, upstream_allow="127.0.0.0/8")


@pytest.fixture
async def store_proxy(database_url: str) -> AsyncIterator[CuttableTcpProxy]:
    port = parse_database_url(database_url).port or 5432
    async with CuttableTcpProxy(port) as proxy:
        yield proxy


def through_proxy(database_url: str, proxy: CuttableTcpProxy) -> str:
    url = parse_database_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


async def count_usage_rows(services: Services) -> tuple[int, int]:
    """(rows, distinct event_ids) in token_usage_logs."""
    query = sa.select(
        sa.func.count(), sa.func.count(sa.distinct(token_usage_logs.c.event_id))
    ).select_from(token_usage_logs)
    async with services.database.read() as connection:
        rows, distinct = (await connection.execute(query)).one()
    return int(rows), int(distinct)


async def test_store_outage_during_load_leaves_exactly_one_usage_row_per_answered_call(
    services: Services,
    admin: Actor,
    database_url: str,
    store_proxy: CuttableTcpProxy,
    tmp_path: Path,
) -> None:
    await services.teams.create(admin, team_id=TEAM_ID, name="Outage team")
    issued = await services.tokens.issue(admin, name="load", team_id=TEAM_ID, scopes=["echo"])
    gateway_settings = make_settings(
        tmp_path / "gateway",
        through_proxy(database_url, store_proxy),
        upstream_allow="127.0.0.0/8",
    )
    app = build_gateway_app(gateway_settings)

    statuses: Counter[int] = Counter()
    failures: list[str] = []
    answered = 0
    sent = 0
    outage_over = asyncio.Event()
    cut_reached = asyncio.Event()
    outage_load_done = asyncio.Event()

    async with running_mock_upstream() as upstream:
        await services.routes.create(
            admin,
            path_prefix="/api/echo",
            upstream_url=f"{upstream}/echo",
            required_scopes=["echo"],
        )
        async with (
            running_asgi_server(app) as gateway,
            httpx.AsyncClient(
                base_url=gateway,
                headers={"X-API-Key": issued.token_secret},
                timeout=10.0,
                limits=httpx.Limits(max_connections=CONCURRENCY),
            ) as client,
        ):

            async def worker() -> None:
                nonlocal answered, sent
                while sent < REQUESTS:
                    if sent >= CUT_AFTER + OUTAGE_REQUESTS and not outage_over.is_set():
                        outage_load_done.set()
                        await outage_over.wait()
                        continue
                    sent += 1
                    try:
                        answer = await client.get(f"/api/echo/call/{sent}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    answered += 1
                    statuses[answer.status_code] += 1
                    if answered >= CUT_AFTER:
                        cut_reached.set()

            async def outage() -> None:
                await cut_reached.wait()
                await store_proxy.cut()
                cut_at = time.monotonic()
                await outage_load_done.wait()
                # Keep the store away for a while and until the recorder has had to spool.
                deadline = cut_at + RECOVERY_DEADLINE_S
                while time.monotonic() - cut_at < OUTAGE_MIN_S or app.recorder.stats.spooled == 0:
                    assert time.monotonic() < deadline, "nothing was spooled during the outage"
                    await asyncio.sleep(0.02)
                await store_proxy.restore()
                outage_over.set()

            outage_task = asyncio.create_task(outage())
            await asyncio.wait_for(
                asyncio.gather(*(worker() for _ in range(CONCURRENCY))), RECOVERY_DEADLINE_S
            )
            await asyncio.wait_for(outage_task, RECOVERY_DEADLINE_S)

            assert failures == []
            assert answered == REQUESTS
            assert statuses == {200: REQUESTS}  # cached tokens and routes kept it serving

            deadline = time.monotonic() + RECOVERY_DEADLINE_S
            while (counts := await count_usage_rows(services)) != (answered, answered):
                assert counts[0] <= answered, f"more usage rows than answered calls: {counts}"
                assert time.monotonic() < deadline, (
                    f"usage rows {counts} != answered {answered}; stats {app.recorder.stats}"
                )
                await asyncio.sleep(0.05)
            stats = app.recorder.stats

    assert stats.spooled > 0
    assert stats.replayed > 0
    assert stats.store_failures > 0
    assert stats.dropped == {"queue_full": 0, "spool_full": 0, "spool_error": 0, "rejected": 0}
    # After the gateway stopped (queue drained, spool closed), still exactly one row per call.
    assert await count_usage_rows(services) == (REQUESTS, REQUESTS)
    async with services.database.read() as connection:
        per_token = await connection.execute(
            sa.select(sa.func.count())
            .select_from(token_usage_logs)
            .where(
                token_usage_logs.c.token_id == issued.token.id,
                token_usage_logs.c.response_status == 200,
                token_usage_logs.c.route_path == "/api/echo",
            )
        )
        assert per_token.scalar_one() == REQUESTS
