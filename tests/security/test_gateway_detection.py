"""End to end: calls through the real gateway (loopback HTTP) are recorded with what the
detectors need — refusals included — and the detectors turn them into findings."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services, build_gateway_app
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs
from tokenmanager.testing import running_asgi_server, running_mock_upstream
from tokenmanager.tokens import codec

from .conftest import all_findings

SCOPE = "echo:read"


async def _wait_for_rows(services: Services, expected: int, gateway_app: GatewayApp) -> None:
    """Flush the gateway's recorder until `expected` rows are stored (or a deadline passes)."""
    deadline = time.monotonic() + 10
    count_rows = sa.select(sa.func.count()).select_from(token_usage_logs)
    while True:
        await gateway_app.recorder.flush()
        async with services.database.read() as connection:
            count = await connection.scalar(count_rows)
        if (count or 0) >= expected or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def test_refusals_and_old_secrets_at_the_gateway_become_findings(
    services: Services, admin: Actor, settings: Settings
) -> None:
    await services.teams.create(admin, team_id="ops", name="Ops")
    rotated = await services.tokens.issue(admin, name="rotated", team_id="ops", scopes=[SCOPE])
    await services.tokens.rotate(admin, rotated.token.id, grace_s=3600)
    revoked = await services.tokens.issue(admin, name="revoked", team_id="ops", scopes=[SCOPE])
    await services.tokens.revoke(admin, revoked.token.id)
    async with running_mock_upstream() as upstream:
        await services.routes.create(
            admin, path_prefix="/api/echo", upstream_url=f"{upstream}/echo", required_scopes=[SCOPE]
        )
        gateway_app = build_gateway_app(settings)
        async with (
            running_asgi_server(gateway_app) as gateway,
            httpx.AsyncClient(base_url=gateway, timeout=10) as client,
        ):

            async def call(token_secret: str) -> int:
                answer = await client.get("/api/echo/x", headers={"X-API-Key": token_secret})
                return answer.status_code

            # The old secret, still inside its grace period; a revoked token; then guessing
            # with well-formed tokens that do not exist.
            secrets = [rotated.token_secret] * 2 + [revoked.token_secret] * 3
            secrets += [codec.build_token_secret() for _ in range(25)]
            statuses = [await call(secret) for secret in secrets]
            assert statuses == [200, 200] + [401] * 28
            await _wait_for_rows(services, 30, gateway_app)

    monitor = services.security.monitor
    await monitor.start_at(utcnow() - timedelta(minutes=5))
    await monitor.run_until_caught_up(utcnow() + timedelta(minutes=1))

    found = {(f.kind, f.token_id, f.ip_address): f for f in await all_findings(services)}
    assert set(found) == {
        ("grace_secret_use", rotated.token.id, None),
        ("revoked_token_use", revoked.token.id, None),
        ("auth_failure_burst", None, "127.0.0.1"),
    }
    assert found[("auth_failure_burst", None, "127.0.0.1")].evidence["count"] == 28
    assert found[("revoked_token_use", revoked.token.id, None)].evidence["count"] == 3
    assert found[("grace_secret_use", rotated.token.id, None)].team_id == "ops"
