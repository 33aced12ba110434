"""Fixtures for the security tests: real tokens in a real store for the synthetic history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.security.evaluation import SyntheticToken, store_events
from tokenmanager.security.models import Finding
from tokenmanager.settings import Settings
from tokenmanager.storage import security as security_sql
from tokenmanager.testing import make_settings, running_asgi_server
from tokenmanager.tokens import codec
from tokenmanager.usage.events import UsageEvent

TEAM = "team-sec"


@pytest.fixture
async def synthetic_tokens(services: Services, admin: Actor) -> list[SyntheticToken]:
    """Twelve tokens of one team, as the evaluation scenario needs."""
    await services.teams.create(admin, team_id=TEAM, name="Security")
    tokens = []
    for index in range(12):
        issued = await services.tokens.issue(admin, name=f"automation {index}", team_id=TEAM)
        tokens.append(SyntheticToken(issued.token.id, codec.hash_token(issued.token_secret)))
    return tokens


async def all_findings(services: Services) -> list[Finding]:
    async with services.database.read() as connection:
        findings, _ = await security_sql.list_findings(
            connection, security_sql.FindingFilter(), limit=10_000, offset=0
        )
    return findings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings one test changes: `@pytest.mark.parametrize("settings_overrides", [{...}])`."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_overrides: dict[str, Any]) -> Settings:
    """The loopback receiver of the webhook tests is allowed through the SSRF guard."""
    return make_settings(
        tmp_path / "data", database_url, upstream_allow="127.0.0.1", **settings_overrides
    )


def refused_call(
    token: SyntheticToken | None,
    used_at: datetime,
    *,
    status: int = 401,
    failure_kind: str = "not_found",
    ip_address: str = "185.220.101.7",
) -> UsageEvent:
    """A call the gateway refused, as it records one."""
    return UsageEvent(
        token_hash=token.token_hash if token else "",
        token_id=token.token_id if token else None,
        route_path=None,
        used_at=used_at,
        response_status=status,
        response_time_ms=1,
        ip_address=ip_address,
        user_agent="python-httpx/0.27.0",
        request_method="GET",
        error_message="missing or invalid API token",
        failure_kind=failure_kind,
    )


async def detect_now(services: Services, events: list[UsageEvent], now: datetime) -> None:
    """Store the events and run the detectors up to `now` (the first time from an hour ago,
    then from where the previous run stopped, as the background loop does)."""
    await store_events(services.database, events)
    monitor = services.security.monitor
    async with services.database.read() as connection:
        position = await security_sql.read_cursor(connection, "usage")
    if position is None:
        await monitor.start_at(now - timedelta(hours=1))
    await monitor.run_until_caught_up(now)


class Receiver:
    """A webhook receiver: records every request; answers with the queued statuses, then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.requests.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    async with running_asgi_server(app) as base_url:
        yield app, base_url + "/hooks/security"
