"""The daily path in a real browser: sign in, issue a token (its secret shown once), call the
real gateway with it, see the call on the analytics and token pages, revoke it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services, build_gateway_app
from tokenmanager.settings import Settings
from tokenmanager.testing import running_asgi_server, running_mock_upstream

from .conftest import (
    DEADLINE_S,
    BrowserWatch,
    chart_option,
    open_context,
    sign_in,
    wait_for_charts,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

ROUTE = "/api/echo"
SCOPE = "echo:read"


@pytest.fixture
async def gateway(services: Services, admin: Actor, settings: Settings) -> AsyncIterator[str]:
    """The real gateway in front of the mock upstream, with the `/api/echo` route."""
    async with running_mock_upstream() as upstream:
        await services.routes.create(
            admin, path_prefix=ROUTE, upstream_url=f"{upstream}/echo", required_scopes=[SCOPE]
        )
        async with running_asgi_server(build_gateway_app(settings)) as url:
            yield url


async def _call_gateway(gateway: str, secret: str) -> int:
    """Call through the gateway until it knows the token (it polls for changes)."""
    async with httpx.AsyncClient(base_url=gateway, timeout=10.0) as client:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            answer = await client.post(f"{ROUTE}/v1/chat", headers={"X-API-Key": secret}, json={})
            if answer.status_code == 200 or time.monotonic() > deadline:
                return answer.status_code
            await asyncio.sleep(0.1)


async def _poll_twin(page: Any, url: str, ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        answer = await page.request.get(url)
        assert answer.status == 200
        data: dict[str, Any] = await answer.json()
        if ready(data) or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.1)


async def test_issue_call_see_and_revoke_a_token(
    browser: Any,
    control_plane: str,
    gateway: str,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    assert page.url.endswith("/")

    # Issue: the secret appears once, in the panel htmx swaps in.
    await page.goto("/tokens")
    await page.fill("#issue-form input[name=name]", "n8n prod")
    await page.select_option("#issue-form select[name=team_id]", "team-a")
    await page.fill("#issue-form input[name=scopes]", SCOPE)
    await page.click("#issue-form button[type=submit]")
    secret = (await page.locator("#issued-secret").text_content() or "").strip()
    assert secret.startswith("ntk_")
    await page.reload()
    assert await page.locator("#issued-secret").count() == 0
    assert secret not in await page.content()
    row = page.locator("#tokens tr", has_text="n8n prod")
    token_id = await row.get_attribute("data-token-id")
    assert await row.locator(".badge.count").text_content() == "0"

    # A call through the real gateway shows up on the analytics page and the token page.
    assert await _call_gateway(gateway, secret) == 200
    stats = await _poll_twin(
        page, "/usage-analytics.json", lambda data: data["overview"]["total_calls"] >= 1
    )
    assert stats["overview"]["total_calls"] == 1
    assert stats["top_tokens"][0]["name"] == "n8n prod"

    await page.goto("/usage-analytics")
    await wait_for_charts(page)
    assert (await page.locator("[data-kpi=total_calls] .kpi-value").text_content()) == "1"
    assert await page.locator("#top-tokens", has_text="n8n prod").count() == 1
    assert await page.locator("#top-routes", has_text=ROUTE).count() == 1
    trend = await chart_option(page, "usage-trend")
    assert trend["series"][0]["data"] == [p["call_count"] for p in stats["hourly_usage"]]
    assert sum(trend["series"][0]["data"]) == 1

    await page.goto(f"/tokens/{token_id}")
    await wait_for_charts(page)
    assert await page.locator("#recent-calls tbody tr", has_text=ROUTE).count() == 1
    routes = await chart_option(page, "token-routes")
    assert routes["series"][0]["data"] == [1]
    assert routes["yAxis"][0]["data"] == [ROUTE]

    # Revoke, after confirming: the list says so and the gateway refuses the token.
    await page.goto("/tokens")
    assert await row.locator(".badge.count").text_content() == "1"
    watch.accept_dialogs = True
    async with page.expect_navigation():
        await row.locator("button.revoke").click()
    assert watch.dialogs
    assert watch.dialogs[0].startswith("confirm")
    watch.dialogs.clear()
    assert await row.locator(".badge.state-revoked").count() == 1
    async with httpx.AsyncClient(base_url=gateway, timeout=10.0) as client:
        deadline = time.monotonic() + DEADLINE_S
        status = 200
        while status == 200 and time.monotonic() < deadline:
            answer = await client.post(f"{ROUTE}/v1/chat", headers={"X-API-Key": secret})
            status = answer.status_code
            await asyncio.sleep(0.05)
    assert status == 401
    watch.assert_clean()
    await context.close()
