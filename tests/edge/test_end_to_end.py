"""End to end: control plane + `tokenmanager edge dev` + mock upstream. A call through the
Worker reaches the upstream with the credential injected and lands in the control plane's usage;
a revocation reaches the Worker through the sync loop; a control-plane outage during load loses
no usage on the Queue path, and nothing is counted twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs, usage_hourly
from tokenmanager.testing import CuttableTcpProxy
from tokenmanager.tokens import codec

from .conftest import UPSTREAM_CREDENTIAL, EdgeStage
from .stage import running_edge_dev

# Deadlines, not timings: generous bounds on a shared machine (the measured revocation delay is
# in bench/results/edge.md).
REVOCATION_DEADLINE_S = 30.0
USAGE_DEADLINE_S = 90.0
LOAD_CALLS = 40


async def _edge_rows(services: Services) -> list[Any]:
    async with services.database.read() as connection:
        query = sa.select(token_usage_logs).where(token_usage_logs.c.source == "edge")
        return list(await connection.execute(query))


async def _wait_for_edge_rows(services: Services, expected: int) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + USAGE_DEADLINE_S
    while True:
        rows = await _edge_rows(services)
        if len(rows) >= expected or loop.time() > deadline:
            return rows
        await asyncio.sleep(0.25)


async def test_a_call_is_forwarded_recorded_and_stops_after_revocation(
    services: Services, admin: Actor, settings: Settings, stage: EdgeStage, control_plane: str
) -> None:
    secret = stage.token.token_secret
    async with running_edge_dev(settings, control_plane) as edge, httpx.AsyncClient() as client:
        response = await client.post(
            f"{edge}/api/echo/x",
            headers={"X-API-Key": secret, "User-Agent": "edge-e2e"},
            content=b"hello",
        )
        assert response.status_code == 200
        seen = response.json()
        assert seen["headers"]["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
        assert secret not in str(seen)

        rows = await _wait_for_edge_rows(services, 1)
        assert len(rows) == 1
        row = rows[0]
        assert row.token_hash == codec.hash_token(secret)
        assert row.token_id == stage.token.token.id
        assert (row.route_path, row.response_status, row.request_method) == (
            "/api/echo",
            200,
            "POST",
        )
        assert (row.user_agent, row.bytes_in, row.failure_kind) == ("edge-e2e", 5, None)
        assert row.bytes_out > 0
        assert row.response_time_ms is not None

        await services.tokens.revoke(admin, stage.token.token.id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REVOCATION_DEADLINE_S
        status = 200
        while status == 200 and loop.time() < deadline:
            await asyncio.sleep(0.1)
            status = (
                await client.get(f"{edge}/api/echo/x", headers={"X-API-Key": secret})
            ).status_code
        assert status == 401


async def test_a_control_plane_outage_during_load_loses_no_usage_and_counts_none_twice(
    services: Services,
    settings: Settings,
    stage: EdgeStage,
    control_plane_proxy: CuttableTcpProxy,
) -> None:
    secret = stage.token.token_secret
    control_plane_url = f"http://127.0.0.1:{control_plane_proxy.port}"
    async with running_edge_dev(settings, control_plane_url, use_queue=True) as edge:
        await control_plane_proxy.cut()
        async with httpx.AsyncClient(timeout=30) as client:

            async def call(index: int) -> int:
                response = await client.get(
                    f"{edge}/api/echo/load/{index}", headers={"X-API-Key": secret}
                )
                return response.status_code

            statuses = await asyncio.gather(*(call(i) for i in range(LOAD_CALLS)))
        assert statuses == [200] * LOAD_CALLS
        # The Queue consumer has tried (and failed) against the dead control plane.
        await _wait_for_retries(edge)
        assert await _edge_rows(services) == []
        await control_plane_proxy.restore()
        rows = await _wait_for_edge_rows(services, LOAD_CALLS)
    assert len(rows) == LOAD_CALLS, f"{len(rows)} usage rows for {LOAD_CALLS} calls"
    assert len({row.event_id for row in rows}) == LOAD_CALLS
    assert {(row.response_status, row.failure_kind) for row in rows} == {(200, None)}
    async with services.database.read() as connection:
        calls = (await connection.execute(sa.select(sa.func.sum(usage_hourly.c.calls)))).scalar()
    assert calls == LOAD_CALLS  # the rollup counted each call once


async def _wait_for_retries(edge: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + USAGE_DEADLINE_S
    async with httpx.AsyncClient() as client:
        while loop.time() < deadline:
            usage = (await client.get(f"{edge}/healthz")).json()["usage"]
            if usage["retried"] > 0:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the Worker never retried a usage batch")
