"""Hostile names render as text on every page and in every chart (no dialog, no CSP
violation), and no page shows a token hash, a token secret or an upstream credential."""

from __future__ import annotations

from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.tokens.codec import hash_token

from .conftest import (
    UPSTREAM_CREDENTIAL,
    BrowserWatch,
    build_stage,
    goto,
    open_context,
    sign_in,
    wait_for_charts,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

HOSTILE = {
    "token_a": '<script>alert("token")</script>',
    "token_b": '"><img src=x onerror=alert("token-b")>',
    "team_b": "<img src=x onerror=alert('team')>",
    "route_a": "/xss/'onmouseover=alert(1)",
    "description": "<svg onload=alert('route')>",
    "message": "<b onmouseover=alert('error')>boom</b>",
    "model": '<script>alert("model")</script>',
}


def _pages(stage: Any) -> list[str]:
    token_id = stage.tokens["a"].token.id
    route_id = stage.route_ids["a"]
    return [
        "/",
        "/usage-analytics",
        "/usage-analytics?team_id=team-b",
        "/tokens",
        f"/tokens/{token_id}",
        "/routes",
        f"/routes/{route_id}",
        f"/routes/{route_id}/edit",
        "/audit",
        "/prices",
    ]


async def test_hostile_names_render_as_text_everywhere(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    stage = await build_stage(services, admin, HOSTILE)
    # The hostile model's calls have no default price; it gets one, and shows on /prices.
    await services.prices.set(
        admin, HOSTILE["model"], input_usd_per_mtok="1", output_usd_per_mtok="2"
    )
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    for path in _pages(stage):
        await page.goto(path)
        await wait_for_charts(page)
        await page.mouse.move(200, 300)  # hover handlers would fire now if any were injected
        text = await page.locator("main").inner_text()
        assert await page.locator("main script, main img, main svg, main b").count() == 0, path
        if path.startswith("/tokens/"):
            assert HOSTILE["token_a"] in text, path
            assert HOSTILE["model"] in text, path  # the recent calls' model column
        if path in ("/usage-analytics", "/prices"):
            assert HOSTILE["model"] in text, path
        if path.startswith("/routes/") and not path.endswith("/edit"):
            assert HOSTILE["description"] in text, path
            assert HOSTILE["message"] in text, path
    await page.goto("/usage-analytics")
    await wait_for_charts(page)
    tokens_text = await page.locator("#top-tokens").inner_text()
    assert HOSTILE["token_a"] in tokens_text
    assert HOSTILE["token_b"] in tokens_text
    assert HOSTILE["team_b"] in await page.locator("select[name=team_id]").inner_text()
    pie_names = await page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-chart="route-share"]'))
                   .getOption().series[0].data.map(d => d.name)"""
    )
    assert HOSTILE["route_a"] in pie_names
    model_cells = await page.locator("#cost-by-model tbody td:first-child").all_inner_texts()
    assert HOSTILE["model"] in model_cells
    await page.goto("/prices")
    row = page.locator("#prices tbody tr").filter(has_text=HOSTILE["model"])
    assert await row.locator("code").inner_text() == HOSTILE["model"]
    assert await row.locator("input[name=model]").input_value() == HOSTILE["model"]
    watch.assert_clean()
    await context.close()


async def test_no_page_or_twin_shows_a_secret(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    stage = await build_stage(services, admin)
    secrets = [UPSTREAM_CREDENTIAL, UPSTREAM_CREDENTIAL[-4:]]
    for issued in stage.tokens.values():
        secrets += [issued.token_secret, hash_token(issued.token_secret)]
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    for path in _pages(stage):
        answer = await goto(page, path)
        html = await answer.text()
        twin_path = await page.locator("body").get_attribute("data-twin")
        twin = await (await page.request.get(twin_path)).text() if twin_path else ""
        for secret in secrets:
            assert secret not in html, (path, secret[:6])
            assert secret not in twin, (twin_path, secret[:6])
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert "<script>" not in html  # only <script src=...> tags, no inline code
    await context.close()
