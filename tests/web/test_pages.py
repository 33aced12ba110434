"""Every page opens without a console error or CSP violation in English and Traditional
Chinese, light and dark, at 1280 px and at phone width (390 px), for an admin and for a
viewer; each is saved as a screenshot (see `screenshot_dir`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .conftest import (
    BrowserWatch,
    Stage,
    build_stage,
    chart_option,
    goto,
    open_context,
    sign_in,
    wait_for_charts,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

WIDTHS = (1280, 390)
SCHEMES = ("light", "dark")
NAV_TEXT = {"en": "Usage analytics", "zh-TW": "使用分析"}


def _admin_pages(stage: Stage) -> list[str]:
    token_id = stage.tokens["a"].token.id
    route_id = stage.route_ids["a"]
    return [
        "/",
        "/usage-analytics",
        "/usage-analytics?window=7d",
        "/usage-analytics?since=2026-01-01&until=2026-12-31",
        "/tokens",
        f"/tokens/{token_id}",
        "/routes",
        "/routes/new",
        f"/routes/{route_id}",
        f"/routes/{route_id}/edit",
        "/audit",
        "/security",
        "/security?status=all&min_severity=high",
        "/prices",
    ]


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "dashboard"


async def _body_is_dark(page: Any) -> bool:
    color = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in re.findall(r"\d+", color)[:3])
    return (red + green + blue) / 3 < 128


@pytest.mark.parametrize("language", ["en", "zh-TW"])
async def test_every_page_opens_cleanly_in_each_language_theme_and_width(
    language: str,
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
    screenshot_dir: Path,
) -> None:
    stage = await build_stage(services, admin)
    for scheme in SCHEMES:
        for width in WIDTHS:
            context = await open_context(
                browser, control_plane, watch, width=width, color_scheme=scheme
            )
            page = await context.new_page()
            await page.goto(f"/login?lang={language}")
            await sign_in(page, *users["admin"])
            for path in _admin_pages(stage):
                await goto(page, path)
                await wait_for_charts(page)
                assert await page.get_attribute("html", "lang") == language
                assert NAV_TEXT[language] in await page.locator("nav").inner_text()
                assert await _body_is_dark(page) is (scheme == "dark"), (path, scheme)
                overflow = await page.evaluate(
                    "document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 1, (path, width, overflow)
                shot = screenshot_dir / f"{language}-{scheme}-{width}-{_slug(path)}.png"
                await page.screenshot(path=str(shot), full_page=True)
                watch.assert_clean()
            await context.close()


async def test_numbers_and_dates_follow_the_language(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    stage = await build_stage(services, admin)
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    token_id = stage.tokens["a"].token.id
    await page.goto(f"/tokens/{token_id}?lang=zh-TW")
    await wait_for_charts(page)
    assert "毫秒" in await page.locator("[data-kpi=avg_response_time]").inner_text()
    heatmap = await chart_option(page, "token-heatmap")
    assert heatmap["yAxis"][0]["data"][0] == "週一"
    assert "年" in await page.locator("#recent-calls tbody tr").first.inner_text()
    # The choice sticks (cookie) until changed.
    await page.goto("/tokens")
    assert await page.get_attribute("html", "lang") == "zh-TW"
    await page.goto(f"/tokens/{token_id}?lang=en")
    assert " ms" in await page.locator("[data-kpi=avg_response_time]").inner_text()
    assert "UTC" in await page.locator("#recent-calls tbody tr").first.inner_text()
    watch.assert_clean()
    await context.close()


async def test_theme_toggle_switches_and_remembers(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    await build_stage(services, admin)
    context = await open_context(browser, control_plane, watch, color_scheme="light")
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await page.goto("/usage-analytics")
    await wait_for_charts(page)
    assert await _body_is_dark(page) is False
    await page.click("#theme-toggle")
    assert await _body_is_dark(page) is True
    assert await page.evaluate(
        "echarts.getInstanceByDom(document.querySelector('[data-chart]')) !== undefined"
    )
    await page.reload()
    await wait_for_charts(page)
    assert await page.get_attribute("html", "data-theme") == "dark"
    assert await _body_is_dark(page) is True
    watch.assert_clean()
    await context.close()


async def test_a_viewer_sees_the_pages_of_their_team_but_not_the_audit_log(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
    screenshot_dir: Path,
) -> None:
    stage = await build_stage(services, admin)
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["viewer"])
    token_a = stage.tokens["a"].token.id
    for path in ("/", "/usage-analytics", "/tokens", f"/tokens/{token_a}", "/routes",
                 f"/routes/{stage.route_ids['a']}", "/prices"):  # fmt: skip
        await goto(page, path)
        await wait_for_charts(page)
        html = await page.content()
        assert stage.names["token_b"] not in html, path
        await page.screenshot(
            path=str(screenshot_dir / f"viewer-{_slug(path)}.png"), full_page=True
        )
    assert "/audit" not in await page.locator("nav").inner_html()
    watch.assert_clean()
    await goto(page, f"/tokens/{stage.tokens['b'].token.id}", 404)
    await goto(page, "/audit", 403)
    await context.close()
